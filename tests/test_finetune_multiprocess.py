"""Fine-tuning on a mesh: `xlmr-jax finetune` on two processes (gloo, 4 CPU devices each, FSDP over
all 8) logs, evaluates, checkpoints and exports what one process on one device does with the same
global batches; and a run resumed on a data x fsdp mesh ends where the uninterrupted one ends."""

import dataclasses
import json
import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from finetune_helpers import make_checkpoint, read_metrics, sentiment_records, write_jsonl
from processes import free_port, run_together
from reference_models import padded_batch
from safetensors.numpy import load_file

import xlmr_jax
from xlmr_jax.cli import main as cli_main
from xlmr_jax.finetune import FinetuneConfig, finetune

LABELS = dict(id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
STEPS, EVAL_EVERY, LEARNING_RATE = 6, 3, 1e-3
# Two processes sum gradients over 8 devices through gloo, one device sums them inside one XLA
# program: the same global batches, summed in another order, so the runs agree to rounding; and Adam
# divides each update by the gradient's own size, so an element whose gradient is near zero turns that
# rounding into a larger step. Measured on this test (issue 11): all but a few elements <= 3e-7, the
# worst 2.0e-6 (a key kernel; 1.3e-7 when the one process uses the same fsdp=8 mesh). 2e-5 is 10x
# that, and 50x below one update at this learning rate (a wrong batch slice or a lost gradient
# reduction moves every weight by about that, and the losses with it).
PARAMS_ATOL = 2e-5
LOSS_RTOL = 1e-5
# Except the attention key biases: they add q.b_k to every score of a query's row, which the
# softmax cancels, so their gradient is zero up to rounding and Adam turns that noise into
# lr-sized steps (measured: 1.2e-4 apart after 3 steps, 1.6e-4 after 6). They are compared by what
# they do: nothing, so the two exported models give the same logits (measured 3e-7 apart).
NO_GRADIENT = "attention.self.key.bias"
LOGITS_ATOL = 3e-6


def _log(output) -> list[dict]:
    """metrics.jsonl without the throughput figures and the summary (it names paths)."""
    return [r for r in read_metrics(output, without_timings=True) if "summary" not in r]


def _summary(output) -> dict:
    return read_metrics(output)[-1]["summary"]


def _exported(output) -> dict[str, np.ndarray]:
    return load_file(os.path.join(output, "model", "model.safetensors"))


def _checkpointed_params(output, step: int) -> dict[str, np.ndarray]:
    """The parameters of checkpoint `step` as host arrays by dotted path (however many processes wrote it)."""
    path = os.path.join(output, "checkpoints", str(step), "state")
    with ocp.StandardCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        state = checkpointer.restore(path, jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree))
    leaves = jax.tree_util.tree_leaves_with_path(state["params"])
    return {".".join(str(getattr(k, "key", k)) for k in key_path): np.asarray(v) for key_path, v in leaves}


def _differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    assert sorted(a) == sorted(b)
    return {k: float(np.max(np.abs(a[k] - b[k]), initial=0.0)) for k in a}


def _assert_params_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    differences = _differences(a, b)
    checked = {k: d for k, d in differences.items() if NO_GRADIENT not in k.replace("/", ".")}
    assert len(checked) < len(differences), f"{what}: no {NO_GRADIENT} among {sorted(differences)}"
    worst = max(checked, key=checked.get)
    print(f"{what}: max |diff| {checked[worst]:.3g} ({worst}); key biases "
          f"{max(differences[k] for k in differences if k not in checked):.3g}")
    assert checked[worst] <= PARAMS_ATOL, f"{what}: {worst} differs by {checked[worst]}"


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune-mesh")
    checkpoint = make_checkpoint(root / "start", "XLMRobertaForSequenceClassification", seed=3, **LABELS)
    train = write_jsonl(root / "train.jsonl", sentiment_records(40, 0))
    # 12 rows, eval batch 8: the second batch's 4 real rows all fall in process 0's half, so process 1
    # evaluates a slice of filler rows only.
    dev = write_jsonl(root / "dev.jsonl", sentiment_records(12, 1))
    return root, checkpoint, train, dev


def test_two_processes_finetune_as_one_does(task_files, tmp_path):
    _, checkpoint, train, dev = task_files
    # One bucket: one compile of the train step (the 8-device step is the slow part of this test).
    args = ["finetune", "--task", "text-classification", "--model", checkpoint, "--train-file", train,
            "--validation-file", dev, "--max-length", "64", "--buckets", "64", "--batch-size", "8",
            "--max-steps", str(STEPS), "--eval-every", str(EVAL_EVERY), "--learning-rate", str(LEARNING_RATE),
            "--weight-decay", "0.01", "--log-every", "1", "--no-progress", "--seed", "5"]

    two = tmp_path / "two"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_DEFAULT_MATMUL_PRECISION="highest")
    command = [sys.executable, "-m", "xlmr_jax.cli", *args, "--output", str(two), "--mesh", "fsdp=8",
               "--rules", "fsdp", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    run_together([[*command, "--process-id", str(i)] for i in range(2)], env)

    one = tmp_path / "one"  # this process, one device: the global batch order does not depend on either
    assert cli_main([*args, "--output", str(one), "--mesh", "none"]) == 0

    log_two, log_one = _log(two), _log(one)
    train_one, train_two = [r for r in log_one if "loss" in r], [r for r in log_two if "loss" in r]
    assert [r["step"] for r in train_two] == [r["step"] for r in train_one] == list(range(1, STEPS + 1))
    for name in ("loss", "grad_norm", "learning_rate"):
        np.testing.assert_allclose([r[name] for r in train_two], [r[name] for r in train_one], rtol=LOSS_RTOL,
                                   err_msg=name)
    assert [r["epoch"] for r in train_two] == [r["epoch"] for r in train_one]
    evals_one = [(r["step"], r["eval"]) for r in log_one if "eval" in r]
    assert [step for step, _ in evals_one] == [EVAL_EVERY, STEPS]
    assert [(r["step"], r["eval"]) for r in log_two if "eval" in r] == evals_one

    summary_two, summary_one = _summary(two), _summary(one)
    for key in ("best_step", "exported_step", "best", "final_eval"):
        assert summary_two[key] == summary_one[key], key
    # The export is the best checkpoint's (restored on two processes when it is not the last), and
    # the last checkpoint is compared too: the two together cover the parameters of every step saved.
    _assert_params_close(_exported(two), _exported(one), f"exported step {summary_one['exported_step']}")
    last_two, last_one = _checkpointed_params(two, STEPS), _checkpointed_params(one, STEPS)
    _assert_params_close(last_two, last_one, f"checkpoint {STEPS}")
    start = load_file(os.path.join(checkpoint, "model.safetensors"))
    exported_one = _exported(one)
    moved = max(_differences({k: exported_one[k] for k in start}, start).values())
    assert moved > 20 * PARAMS_ATOL  # the comparison means something: training moved the weights

    ids, mask = padded_batch(np.random.default_rng(0), [30, 9, 17, 4], vocab=302)
    logits = [np.asarray(xlmr_jax.jit_forward(
        xlmr_jax.XLMRobertaForSequenceClassification.from_pretrained(run / "model"))(ids, mask).logits)
        for run in (two, one)]
    np.testing.assert_allclose(logits[0], logits[1], atol=LOGITS_ATOL)

    # what process 0 alone writes: the label maps and the tokenizer; each process its own shards
    assert json.loads((two / "model" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    assert (two / "model" / "sentencepiece.bpe.model").is_file()
    assert len(list((two / "checkpoints" / str(STEPS) / "state").glob("ocdbt.process_*"))) == 2


def test_resume_on_a_mesh_ends_where_the_uninterrupted_run_ends(task_files, tmp_path):
    root, _, train, dev = task_files
    # dropout on: the resumed run must also draw the same dropout masks on the mesh
    checkpoint = make_checkpoint(root / "start-dropout", "XLMRobertaForSequenceClassification", seed=4,
                                 hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, **LABELS)
    config = FinetuneConfig(
        task="text-classification", model=checkpoint, output=str(tmp_path / "full"), train_file=train,
        validation_file=dev, max_length=64, buckets=(64,), batch_size=8, max_steps=8, learning_rate=1e-3,
        warmup_ratio=0.2, save_every=4, mesh="data=2,fsdp=4", rules="fsdp", log_every=1, progress=False, seed=7,
    )
    summary = finetune(config)

    interrupted = tmp_path / "interrupted"  # what a run killed after saving step 4 leaves
    shutil.copytree(config.output, interrupted)
    shutil.rmtree(interrupted / "model")
    for name in os.listdir(interrupted / "checkpoints"):
        if name.isdigit() and int(name) > 4:
            shutil.rmtree(interrupted / "checkpoints" / name)
    assert sorted(os.listdir(interrupted / "checkpoints")) == ["4"]
    resumed = finetune(dataclasses.replace(config, output=str(interrupted), resume=True))

    full, again = _log(config.output), _log(interrupted)
    assert [r["step"] for r in again] == [r["step"] for r in full]
    for a, b in zip(again, full, strict=True):
        if "loss" in a:
            np.testing.assert_allclose([a["loss"], a["grad_norm"]], [b["loss"], b["grad_norm"]], rtol=1e-6)
        else:
            assert a == b
    differences = _differences(_exported(interrupted), _exported(config.output))
    worst = max(differences, key=differences.get)
    print(f"resumed vs uninterrupted on data=2,fsdp=4: max |diff| {differences[worst]:.3g} ({worst})")
    assert differences[worst] <= 1e-6, f"{worst} differs by {differences[worst]}"
    for key in ("final_eval", "best_step", "exported_step", "best"):
        assert resumed[key] == summary[key], key
