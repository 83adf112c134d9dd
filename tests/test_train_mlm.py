"""The training entry point: MLM masking, `xlmr-jax train-mlm` on one process and on two
(`jax.distributed` flags), outputs that transformers loads and that resume."""

import os
import re
import sys

import numpy as np
import pytest
import transformers
from processes import free_port, run_together

from xlmr_jax.cli import main as cli_main
from xlmr_jax.demo import TINY_CHECKPOINT
from xlmr_jax.demo.corpus import SENTENCES
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


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(SENTENCES * 3) + "\n", encoding="utf-8")
    return str(path)


def test_train_mlm_on_one_process(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train-mlm", TINY_CHECKPOINT, text_file, str(out), "--steps", "30", "--batch-size", "8",
            "--max-length", "48", "--learning-rate", "1e-3", "--mesh", "data=2,fsdp=4"]
    assert cli_main(args) == 0
    found = re.search(r"first loss ([\d.]+), last loss ([\d.]+)", capsys.readouterr().out)
    first, last = float(found.group(1)), float(found.group(2))
    assert last < first - 0.5
    _, info = transformers.XLMRobertaForMaskedLM.from_pretrained(out / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert (out / "model" / "sentencepiece.bpe.model").exists() and (out / "train-state").is_dir()
    assert cli_main(args) == 2  # the output exists: refused without --overwrite
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_train_mlm_bad_arguments(text_file, tmp_path, capsys):
    base = [TINY_CHECKPOINT, text_file, str(tmp_path / "x"), "--steps", "1"]
    assert cli_main(["train-mlm", *base, "--mesh", "data=3"]) == 2
    assert "needs 3 devices, but 8 are present" in capsys.readouterr().err
    assert cli_main(["train-mlm", TINY_CHECKPOINT, str(tmp_path / "none.txt"), str(tmp_path / "y"),
                     "--steps", "1"]) == 2
    assert "training text not found" in capsys.readouterr().err


def test_train_mlm_on_two_processes_with_distributed_flags(text_file, tmp_path):
    out = tmp_path / "run"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    command = [sys.executable, "-m", "xlmr_jax.cli", "train-mlm", TINY_CHECKPOINT, text_file, str(out),
               "--steps", "10", "--batch-size", "8", "--max-length", "48", "--mesh", "fsdp=8",
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    outputs = run_together([[*command, "--process-id", str(i)] for i in range(2)], env)
    for output in outputs:
        assert "first loss" in output  # every process reports the (global) loss
    assert "step 1/10" in outputs[0] and "step 1/10" not in outputs[1]  # progress from process 0 only
    assert len(list((out / "train-state").glob("ocdbt.process_*"))) == 2
    _, info = transformers.XLMRobertaForMaskedLM.from_pretrained(out / "model", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
