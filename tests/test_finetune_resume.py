"""A run interrupted after a checkpoint and resumed ends exactly where an uninterrupted run ends:
same losses at every step and the same exported bytes (one device, dropout on, so the random keys
must line up too), and only the last K checkpoints plus the best are kept."""

import dataclasses
import os
import shutil

import pytest
from finetune_helpers import make_checkpoint, read_metrics, sentiment_records, write_jsonl

from xlmr_jax.finetune import FinetuneConfig, finetune

STEPS, SAVE_EVERY = 12, 4


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(config, output) of an uninterrupted run that evaluated and saved every 4 steps."""
    root = tmp_path_factory.mktemp("resume")
    checkpoint = make_checkpoint(root / "start", "XLMRobertaForSequenceClassification", seed=1,
                                 hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                                 id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    config = FinetuneConfig(
        task="text-classification", model=checkpoint, output=str(root / "full"),
        train_file=write_jsonl(root / "train.jsonl", sentiment_records(40, 0)),
        validation_file=write_jsonl(root / "dev.jsonl", sentiment_records(12, 1)),
        max_length=64, buckets=(32, 64), batch_size=8, max_steps=STEPS, learning_rate=1e-3, warmup_ratio=0.2,
        eval_every=SAVE_EVERY, keep_checkpoints=2, mesh=None, log_every=1, progress=False, seed=7,
    )
    summary = finetune(config)
    return config, root, summary


def _log(output) -> list[dict]:
    return read_metrics(output, without_timings=True)


def _bytes(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def test_resumed_run_equals_the_uninterrupted_one(finished):
    config, root, summary = finished
    # The state a run killed after step 8 leaves: checkpoints up to 8, no exported model, and the
    # log lines it had written beyond step 8.
    interrupted = root / "interrupted"
    shutil.copytree(config.output, interrupted)
    shutil.rmtree(interrupted / "model")
    kept = sorted(int(name) for name in os.listdir(interrupted / "checkpoints") if name.isdigit())
    assert 8 in kept
    for step in kept:
        if step > 8:
            shutil.rmtree(interrupted / "checkpoints" / str(step))

    resumed = finetune(dataclasses.replace(config, output=str(interrupted), resume=True))

    assert _log(interrupted)[:-1] == _log(config.output)[:-1]  # every line but the summary
    model = os.path.join(summary["model"], "model.safetensors")
    again = os.path.join(resumed["model"], "model.safetensors")
    assert _bytes(model) == _bytes(again)
    assert resumed["best_step"] == summary["best_step"] and resumed["final_eval"] == summary["final_eval"]


def test_keeps_the_last_checkpoints_and_the_best(finished):
    config, _, summary = finished
    steps = sorted(int(name) for name in os.listdir(os.path.join(config.output, "checkpoints")) if name.isdigit())
    assert set(steps) == {8, STEPS, summary["best_step"]}  # keep_checkpoints=2: the last two and the best
    evals = [r for r in _log(config.output) if "eval" in r]
    assert [r["step"] for r in evals] == [4, 8, 12]
    best_value = max(r["eval"]["accuracy"] for r in evals)
    assert summary["best"] == best_value
    assert next(r["step"] for r in evals if r["eval"]["accuracy"] == best_value) == summary["best_step"]


def test_resume_refuses_a_different_run(finished, tmp_path):
    config, _, _ = finished
    with pytest.raises(ValueError, match=r"learning_rate: was 0.001, now 0.002"):
        finetune(dataclasses.replace(config, learning_rate=2e-3, resume=True))
    with pytest.raises(FileNotFoundError, match="no run to resume"):
        finetune(dataclasses.replace(config, output=str(tmp_path / "nothing"), resume=True))


def test_a_best_step_between_saves_is_saved_for_the_export(finished, tmp_path):
    config, _, _ = finished
    # Nothing learns at rate 0: the first evaluation (step 3, not a save step) stays the best.
    summary = finetune(dataclasses.replace(config, output=str(tmp_path / "run"), learning_rate=0.0,
                                           max_steps=6, eval_every=3, save_every=6))
    assert summary["best_step"] == summary["exported_step"] == 3
    steps = sorted(int(n) for n in os.listdir(tmp_path / "run" / "checkpoints") if n.isdigit())
    assert steps == [3, 6]


@pytest.mark.parametrize("greater_is_better", [True, False])
def test_a_resumed_run_keeps_the_best_checkpoint(tmp_path, greater_is_better):
    """The best checkpoint outlives the last K in a resumed run too: the manager of the resumed run
    reads the earlier checkpoints' metrics from disk (orbax keeps them in memory only unless told
    to track the best), so its next save does not drop the best one."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from xlmr_jax.finetune.checkpoints import RunCheckpoints

    good, worse = (0.9, 0.5) if greater_is_better else (0.5, 0.9)
    state = {"w": jnp.arange(3.0)}

    def manager():
        return RunCheckpoints(str(tmp_path), keep=1, metric="m", greater_is_better=greater_is_better)

    first = manager()
    first.save(4, state, {"best": good}, {"m": good})
    first.save(8, jax.tree.map(lambda w: w + 1.0, state), {"best": good}, {"m": worse})
    assert sorted(first.all_steps()) == [4, 8]
    first.close()

    resumed = manager()
    resumed.save(12, jax.tree.map(lambda w: w + 2.0, state), {"best": good}, {"m": worse})
    assert sorted(resumed.all_steps()) == [4, 12]  # the last one and the best
    restored, progress = resumed.restore(4, state)
    np.testing.assert_array_equal(np.asarray(restored["w"]), [0.0, 1.0, 2.0])
    assert progress == {"best": good}
    resumed.close()
