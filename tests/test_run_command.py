"""`xlmr-jax run` through a subprocess, as scripts use it: stdin, files, JSON lines, exit codes."""

import json
import os
import subprocess
import sys

import pytest

import xlmr_jax
from xlmr_jax.demo import TINY_CHECKPOINT
from xlmr_jax.run import per_input

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


# -- every task through the command -------------------------------------------------------------------

TOKENIZER_FILES = ("sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json")


def tiny_checkpoint(directory, arch: str, **overrides) -> str:
    """A tiny random reference model of `arch` with the shipped demo tokenizer (vocabulary 302)."""
    import shutil

    from reference_models import build_reference, save_reference

    model = build_reference("xlm-roberta", arch, vocab_size=302, max_position_embeddings=130, type_vocab_size=1,
                            **overrides)
    save_reference(model, directory)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(TINY_CHECKPOINT, name), directory)
    return str(directory)


def labels(*names):
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


CONTEXT = "Paris is the capital of France. Москва — столица России. Der Hund schläft im Garten."
TASK_CASES = {  # task: (architecture, config overrides, input lines, options, output file)
    "fill-mask": (None, {}, TEXTS, {"top_k": 2}, None),
    "text-classification": ("XLMRobertaForSequenceClassification", labels("neg", "pos"),
                            [json.dumps({"text": "I love it", "text_pair": "Wonderful"}), json.dumps("Bad.")],
                            {"top_k": None}, "out.jsonl"),
    "zero-shot-classification": ("XLMRobertaForSequenceClassification",
                                 labels("contradiction", "neutral", "entailment"), ["Der Hund schläft."],
                                 {"candidate_labels": ["animal", "city"]}, None),
    "token-classification": ("XLMRobertaForTokenClassification", labels("O", "B-LOC", "I-LOC"), [CONTEXT],
                             {"aggregation_strategy": "simple"}, None),
    "question-answering": ("XLMRobertaForQuestionAnswering", {"num_labels": 2},
                           [json.dumps({"question": "Where is Paris?", "context": CONTEXT})], {}, None),
    "feature-extraction": (None, {}, ["Paris is nice."], {}, None),
    "sentence-embeddings": (None, {}, ["Paris is nice.", "Москва."], {}, "out.npy"),
    "text-generation": ("XLMRobertaForCausalLM", {"is_decoder": True}, ["Paris is"], {"max_new_tokens": 3}, None),
}


def assert_close_results(got, want, where="result"):
    """Equal structure and values; floats within 1e-5 (another process: a tolerance, never equality)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), where
        for key in want:
            assert_close_results(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list | tuple):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_close_results(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        assert abs(got - want) <= 1e-5, f"{where}: {got} vs {want}"
    else:
        assert got == want, f"{where}: {got!r} vs {want!r}"


@pytest.mark.parametrize("task", sorted(TASK_CASES))
def test_every_task_through_the_command_equals_the_pipeline(task, tmp_path):
    import numpy as np

    arch, overrides, lines, options, output = TASK_CASES[task]
    model = TINY_CHECKPOINT if arch is None else tiny_checkpoint(tmp_path / "model", arch, **overrides)
    jsonl = task in ("question-answering", "text-classification")
    args = ["--task", task, "--model", model] + (["--jsonl"] if jsonl else [])
    for key, value in options.items():
        args += ["--option", f"{key}={json.dumps(value)}"]
    if output:
        args += ["--output", str(tmp_path / output)]
    result = run(*args, stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    inputs = [json.loads(line) for line in lines] if jsonl else lines
    expected = per_input(xlmr_jax.pipeline(task, model, **options)(inputs), len(inputs))
    if output == "out.npy":
        np.testing.assert_allclose(np.load(tmp_path / output), expected, atol=1e-5)
        return
    text = (tmp_path / output).read_text(encoding="utf-8") if output else result.stdout
    got = [json.loads(line) for line in text.splitlines()]
    assert_close_results(got, json.loads(json.dumps(expected, default=lambda x: x.tolist())))
