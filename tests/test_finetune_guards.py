"""What a fine-tuning run does with bad numbers and bad input: a non-finite loss stops the run
naming the step and the last good checkpoint (or, when asked, the update is skipped); bad data,
arguments or output places fail before anything is written, and an existing output is kept."""

import dataclasses
import json
import os

import numpy as np
import pytest
from finetune_helpers import make_checkpoint, read_metrics, sentiment_records, write_jsonl
from safetensors.numpy import load_file

from xlmr_jax.cli import main
from xlmr_jax.finetune import FinetuneConfig, NonFiniteError, finetune


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    checkpoint = make_checkpoint(root / "start", "XLMRobertaForSequenceClassification", seed=2,
                                 id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    train = write_jsonl(root / "train.jsonl", sentiment_records(32, 0))
    config = FinetuneConfig(task="text-classification", model=checkpoint, train_file=train,
                            output=str(root / "out"), max_length=64, buckets=(64,), batch_size=8, max_steps=6,
                            mesh=None, log_every=1, progress=False)
    return root, config


def test_a_non_finite_loss_stops_the_run_and_names_the_last_good_checkpoint(setup, tmp_path):
    _, config = setup
    # A learning rate of 1e12 blows the weights up in one update: the second step's loss is not finite.
    exploding = dataclasses.replace(config, output=str(tmp_path / "run"), learning_rate=1e12, max_grad_norm=None,
                                    save_every=1)
    with pytest.raises(NonFiniteError, match=r"step \d: loss (nan|inf).*last good checkpoint is step \d") as err:
        finetune(exploding)
    bad_step = int(str(err.value).split()[1].rstrip(":"))
    checkpoints = sorted(int(n) for n in os.listdir(tmp_path / "run" / "checkpoints") if n.isdigit())
    assert checkpoints and max(checkpoints) == bad_step - 1  # nothing saved from the bad step on
    assert not os.path.exists(tmp_path / "run" / "model")


def test_skipping_non_finite_updates_keeps_the_parameters_finite(setup, tmp_path):
    _, config = setup
    skipping = dataclasses.replace(config, output=str(tmp_path / "run"), learning_rate=1e12, max_grad_norm=None,
                                   on_nonfinite="skip")
    summary = finetune(skipping)
    skipped = sum(r.get("skipped_updates", 0) for r in read_metrics(tmp_path / "run"))
    assert skipped >= 1
    weights = load_file(os.path.join(summary["model"], "model.safetensors"))
    assert all(np.isfinite(w).all() for w in weights.values())


def test_bad_input_leaves_an_existing_output_as_it_was(setup, tmp_path):
    _root, config = setup
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    unseen = write_jsonl(tmp_path / "dev.jsonl", [{"sentence1": "a b c", "label": "maybe"}])
    cases = {
        "unseen label": (dict(validation_file=unseen, overwrite=True), "'maybe' does not occur in the training"),
        "missing column": (dict(train_file=write_jsonl(tmp_path / "t.jsonl", [{"text2": "x", "label": 1}]),
                                overwrite=True), "text2"),
        "exists": (dict(), "not empty; pass --resume .* or --overwrite"),
        "inside the model": (dict(output=os.path.join(config.model, "run"), overwrite=True), "model|source|inside"),
    }
    for name, (changes, message) in cases.items():
        changes = {"output": str(output), **changes}
        with pytest.raises((ValueError, FileExistsError), match=message):
            finetune(dataclasses.replace(config, **changes))
        assert sorted(os.listdir(output)) == ["keep.txt"], name
    assert not os.path.exists(os.path.join(config.model, "run"))


def test_the_command_line_reports_a_user_error_in_one_line(setup, tmp_path, capsys):
    root, config = setup
    code = main(["finetune", "--task", "text-classification", "--model", config.model, "--train-file",
                 str(root / "nothing.jsonl"), "--output", str(tmp_path / "out"), "--mesh", "none", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "nothing.jsonl" in err
    assert not os.path.exists(tmp_path / "out")


def test_the_command_line_trains_and_exports(setup, tmp_path, capsys):
    _root, config = setup
    code = main(["finetune", "--task", "text-classification", "--model", config.model, "--train-file",
                 config.train_file, "--validation-file", config.train_file, "--output", str(tmp_path / "out"),
                 "--max-length", "64", "--batch-size", "8", "--max-steps", "2", "--mesh", "none", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == str(tmp_path / "out" / "model")
    with open(tmp_path / "out" / "model" / "config.json", encoding="utf-8") as fh:
        assert json.load(fh)["id2label"] == {"0": "neg", "1": "pos"}
    assert os.path.exists(tmp_path / "out" / "model" / "sentencepiece.bpe.model")
    # and our pipelines take the export as it is
    from xlmr_jax import pipeline

    result = pipeline("text-classification", model=summary["model"])(["a lovely garden", "an awful road"])
    assert [r["label"] in ("neg", "pos") for r in result] == [True, True]
