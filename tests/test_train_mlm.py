"""`xlmr-jax train-mlm`, the alias of `xlmr-jax finetune --task masked-lm`: its legacy form
(`CHECKPOINT TEXT_FILE OUTPUT --steps N`) and defaults make the FinetuneConfig that finetune's flags
make; one process trains and exports a model transformers loads; two processes run it with the
distributed flags; a bad argument is one line naming it. Also MLM masking itself. What finetune
does with any config (resume, non-finite numbers, bad data) is tested in test_finetune_*.py."""

import json
import os
import sys

import numpy as np
import pytest
import transformers
from finetune_helpers import read_metrics
from processes import free_port, run_together

from xlmr_jax.cli import build_parser
from xlmr_jax.cli import main as cli_main
from xlmr_jax.demo import TINY_CHECKPOINT
from xlmr_jax.demo.corpus import SENTENCES
from xlmr_jax.finetune import FinetuneConfig
from xlmr_jax.finetune.cli_args import config_from_args
from xlmr_jax.training.masking import mask_tokens


def test_masking_follows_the_bert_recipe():
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 300, size=(400, 50))
    special = np.zeros_like(ids, dtype=bool)
    special[:, 0] = special[:, -1] = True
    masked, labels = mask_tokens(ids, special, mask_token_id=301, vocab_size=302, rng=rng)
    chosen = labels != -100
    assert not chosen[special].any()
    assert abs(chosen[~special].mean() - 0.15) < 0.01
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    np.testing.assert_array_equal(masked[~chosen], ids[~chosen])
    assert abs((masked[chosen] == 301).mean() - 0.8) < 0.03
    assert abs((masked[chosen] == ids[chosen]).mean() - 0.1) < 0.03  # kept (plus rare random hits)
    with pytest.raises(ValueError, match="mask probability"):
        mask_tokens(ids, special, mask_token_id=301, vocab_size=302, rng=rng, probability=1.0)


def config_of(*argv: str) -> FinetuneConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_the_alias_is_finetune_masked_lm_with_the_old_defaults():
    alias = config_of("train-mlm", "ckpt", "lines.txt", "out", "--steps", "4")
    # One line, one example (no packing); 8 rows a batch; a fixed learning rate of 5e-5. The rest is finetune's.
    assert alias == FinetuneConfig(task="masked-lm", model="ckpt", train_file="lines.txt", output="out",
                                   max_steps=4, pack=False, batch_size=8, learning_rate=5e-5, schedule="constant")
    assert alias == config_of("finetune", "--task", "masked-lm", "--model", "ckpt", "--train-file", "lines.txt",
                              "--output", "out", "--max-steps", "4", "--no-pack", "--batch-size", "8",
                              "--learning-rate", "5e-5", "--schedule", "constant")
    # finetune's flags pass through, the old defaults yield to them; --max-steps is --steps
    changed = config_of("train-mlm", "ckpt", "lines.txt", "out", "--max-steps", "3", "--pack", "--batch-size",
                        "16", "--schedule", "linear", "--mesh", "none", "--seed", "7", "--resume", "--column",
                        "body=text")
    assert (changed.max_steps, changed.pack, changed.batch_size, changed.schedule, changed.mesh, changed.seed,
            changed.resume, changed.columns) == (3, True, 16, "linear", None, 7, True, {"body": "text"})
    assert config_of("train-mlm", "ckpt", "lines.txt", "out").max_steps is None  # then finetune's --epochs
    # layers unrolled by default, the scan loop on request
    assert config_of("train-mlm", "ckpt", "lines.txt", "out").unroll_layers is True
    assert config_of("train-mlm", "ckpt", "lines.txt", "out", "--no-unroll-layers").unroll_layers is False


def test_the_alias_has_no_task_to_choose(capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["train-mlm", "ckpt", "lines.txt", "out", "--task", "causal-lm"])
    assert exited.value.code == 2 and "unrecognized arguments: --task" in capsys.readouterr().err


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return str(path)


def test_train_mlm_trains_and_exports_on_one_process(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train-mlm", TINY_CHECKPOINT, text_file, str(out), "--steps", "3", "--max-length", "16",
            "--mesh", "data=2,fsdp=4", "--log-every", "1", "--no-progress"]
    assert cli_main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == str(out / "model") and summary["total_steps"] == 3
    assert sorted(os.listdir(out)) == ["checkpoints", "metrics.jsonl", "model", "run_config.json"]
    recorded = json.loads((out / "run_config.json").read_text())
    assert {k: recorded[k] for k in ("task", "model", "train_file", "max_steps", "pack", "batch_size")} == dict(
        task="masked-lm", model=TINY_CHECKPOINT, train_file=text_file, max_steps=3, pack=False, batch_size=8)
    logged = [r for r in read_metrics(out) if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in logged)
    assert [r["learning_rate"] for r in logged] == pytest.approx([5e-5] * 3)  # constant, as train-mlm's was
    _, info = transformers.XLMRobertaForMaskedLM.from_pretrained(out / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert (out / "model" / "sentencepiece.bpe.model").exists()
    assert cli_main(args) == 2  # finetune's rule: a run in OUTPUT is continued or replaced only when asked
    assert "not empty; pass --resume to continue the run in it or --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(("problem", "message"), [
    (("--mesh", "data=3"), "needs 3 devices, but 8 are present"),
    (("--steps", "0"), "max_steps must be an integer >= 1, got 0"),
    (("--text", "none.txt"), "none.txt"),
    (("--text", "corpus.md"), "unknown file type '.md'"),
])
def test_train_mlm_bad_arguments_are_one_line(problem, message, text_file, tmp_path, capsys):
    flag, value = problem
    text, more = text_file, [flag, value]
    if flag == "--text":
        text, more = str(tmp_path / value), []
        if value.endswith(".md"):
            (tmp_path / value).write_text("a line\n", encoding="utf-8")
    code = cli_main(["train-mlm", TINY_CHECKPOINT, text, str(tmp_path / "out"), "--steps", "1", "--no-progress",
                     *more])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("xlmr-jax train-mlm: error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "out").exists()


def test_train_mlm_on_two_processes_with_distributed_flags(text_file, tmp_path):
    out = tmp_path / "run"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    command = [sys.executable, "-m", "xlmr_jax.cli", "train-mlm", TINY_CHECKPOINT, text_file, str(out),
               "--steps", "2", "--max-length", "16", "--mesh", "fsdp=8", "--log-every", "1",
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    outputs = run_together([[*command, "--process-id", str(i)] for i in range(2)], env)
    for output in outputs:
        assert '"total_steps": 2' in output  # every process ends with the summary
    assert "finetune masked-lm" in outputs[0] and "finetune masked-lm" not in outputs[1]  # progress: process 0
    assert len(list((out / "checkpoints" / "2" / "state").glob("ocdbt.process_*"))) == 2
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == [1, 2]  # written by process 0 alone
    _, info = transformers.XLMRobertaForMaskedLM.from_pretrained(out / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
