"""`xlmr-jax run` through a subprocess, as scripts use it: stdin, files, JSON lines, exit codes."""

import json
import os
import subprocess
import sys

import xlmr_jax
from xlmr_jax.demo import TINY_CHECKPOINT

TEXTS = ["Plants create <mask> through a process known as photosynthesis.", "Paris is the <mask> of France."]


def run(*args, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as a user runs it
    return subprocess.run([sys.executable, "-m", "xlmr_jax.cli", "run", *args], input=stdin, capture_output=True,
                          text=True, env=env, cwd=cwd, check=False)


def test_stdin_to_json_lines_equal_to_the_pipeline():
    result = run("--task", "fill-mask", "--model", TINY_CHECKPOINT, "--top-k", "3", stdin="\n".join(TEXTS) + "\n\n")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    expected = xlmr_jax.pipeline("fill-mask", TINY_CHECKPOINT)(TEXTS, top_k=3)
    assert len(lines) == 2
    for got, want in zip(lines, expected, strict=True):
        assert [r["token"] for r in got] == [r["token"] for r in want]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(got, want, strict=True)) <= 1e-5


def test_files_in_and_out_with_options(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS * 3) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run("--task", "fill-mask", "--model", TINY_CHECKPOINT, "--input", str(source), "--output", str(out),
                 "--option", 'targets=["▁the", "s"]', "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    assert "6/6" in result.stderr  # the progress bar, on stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6 and all(len(row) == 2 for row in rows)
    expected = xlmr_jax.pipeline("fill-mask", TINY_CHECKPOINT)(TEXTS[0], targets=["▁the", "s"])
    assert [p["token"] for p in rows[0]] == [p["token"] for p in expected]
    assert sorted(os.listdir(tmp_path)) == ["in.txt", "out.jsonl"]  # written through a temp file


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    bad = run("--task", "fill-mask-x", "--model", TINY_CHECKPOINT, stdin="a\n")
    assert bad.returncode == 2 and "unknown task 'fill-mask-x'; the tasks are: " in bad.stderr
    no_mask = run("--task", "fill-mask", "--model", TINY_CHECKPOINT, stdin="<mask> ok\nno mask\n")
    assert no_mask.returncode == 2 and "text 1 has no mask token" in no_mask.stderr
    assert "Traceback" not in no_mask.stderr and no_mask.stdout == ""
    lines = tmp_path / "in.jsonl"
    lines.write_text('"a <mask>"\n{not json\n', encoding="utf-8")
    malformed = run("--task", "fill-mask", "--model", TINY_CHECKPOINT, "--input", str(lines))
    assert malformed.returncode == 2 and f"{lines}, line 2: not a JSON object" in malformed.stderr
    missing = run("--task", "fill-mask", "--model", TINY_CHECKPOINT, "--input", str(tmp_path / "none.txt"))
    assert missing.returncode == 2 and "input file not found" in missing.stderr
    wrong_head = run("--task", "fill-mask", "--model", str(tmp_path / "nowhere"), stdin="a <mask>\n")
    assert wrong_head.returncode == 2
    usage = run("--model", TINY_CHECKPOINT)
    assert usage.returncode == 2 and "--task" in usage.stderr
