"""The README's example runs as written; the main job passes; the tiny parity checkpoint is reproducible
(the trained demo model's own checks are in test_demo_model.py)."""

import filecmp
import json
import os
import re

import xlmr_jax
from xlmr_jax.cli import main as cli_main
from xlmr_jax.demo import DEMO_CHECKPOINT, TINY_CHECKPOINT
from xlmr_jax.demo.examples import FILL_MASK, SIMILARITY_PAIRS
from xlmr_jax.demo.make_checkpoint import main as make_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_python_blocks() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        return re.findall(r"```python\n(.*?)```", fh.read(), flags=re.DOTALL)


def test_readme_examples_run():
    blocks = readme_python_blocks()
    assert blocks, "the README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - running our own README


def test_main_job_reports_predictions_and_parity(capsys):
    assert cli_main(["demo"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {DEMO_CHECKPOINT}" in out
    for language, text, _ in FILL_MASK:  # one fill-mask line per language, with its top 5
        line = next(line for line in out.splitlines() if line.startswith(f"  {language}  {text}"))
        assert len(re.findall(r" \d\.\d\d(?:,|$)", line)) == 5, line
    assert "vs transformers.pipeline('fill-mask'): same top-5 tokens: True" in out
    assert out.count("related ") == len(SIMILARITY_PAIRS)
    assert "vs transformers (mean of XLMRobertaModel's last hidden states over real tokens)" in out
    assert "FAIL" not in out
    assert "tokenizer ids equal to the reference's: True" in out
    assert "parity OK: 9 outputs of 7 models" in out and "converted back bit-exact" in out
    assert out.count("  yes") == 9  # every Flax -> HF round trip bit-exact
    for arch in xlmr_jax.MODEL_CLASSES:
        assert arch in out


def _config_without_writer(path) -> dict:
    with open(path) as fh:
        config = json.load(fh)
    assert "transformers_version" in config  # the field this comparison leaves out exists
    del config["transformers_version"]
    return config


def test_shipped_checkpoint_is_rebuilt_bit_for_bit(tmp_path):
    make_checkpoint([str(tmp_path / "rebuilt")])
    names = sorted(os.listdir(TINY_CHECKPOINT))
    assert names == sorted(os.listdir(tmp_path / "rebuilt"))
    # config.json records the transformers version that wrote it, which is not part of the model:
    # a rebuild under another release differs there only.
    configs = [_config_without_writer(os.path.join(d, "config.json")) for d in (TINY_CHECKPOINT, tmp_path / "rebuilt")]
    assert configs[0] == configs[1]
    others = [n for n in names if n != "config.json"]
    _, mismatch, errors = filecmp.cmpfiles(TINY_CHECKPOINT, tmp_path / "rebuilt", others, shallow=False)
    assert not mismatch and not errors, f"differ: {mismatch} {errors}"
    assert sum(os.path.getsize(os.path.join(TINY_CHECKPOINT, n)) for n in names) < 2_000_000


def test_main_job_without_transformers_still_converts_and_runs(monkeypatch, capsys):
    import importlib.util

    from xlmr_jax.demo import run

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(run.importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else real_find_spec(name, *a))
    assert run.main() == 0
    out = capsys.readouterr().out
    assert out.count("(transformers not installed)") == 9
    assert "tokenizer ids equal" not in out
    assert "vs transformers.pipeline" not in out and "vs transformers (mean" not in out
    assert "the masked word is among the top 5" in out and "the best guess is a word of the sentence's script in" in out
    assert out.count("related ") == len(SIMILARITY_PAIRS)
