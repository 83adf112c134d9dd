"""question-answering against transformers 4.57's `pipeline("question-answering")` (transformers 5
dropped it) on the same random checkpoint: the same answers (text, start, end), scores within 1e-4,
over contexts cut into many windows; top_k, handle_impossible_answer, align_to_words, max_answer_len,
every input form, bad input.

transformers 4.57 is installed beside transformers 5 (`pip install --target` into a cache directory,
once) and run in one subprocess for every case. It is given the tokenizer transformers 5 builds
(its tokenizer.json), whose character offsets ours equals: 4.57's own conversion of
sentencepiece.bpe.model gives every "▁"-token the space before it, so its answers begin with that
space (" Paris" at start - 1); `test_transformers_4_tokenizer_only_adds_the_space_before` pins that
this is the only difference.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import xlmr_jax
from tests.reference_models import build_reference, save_reference
from xlmr_jax.demo import TINY_CHECKPOINT
from xlmr_jax.demo.corpus import SENTENCES

PIP_ARGS = ["transformers==4.57.*", "tokenizers>=0.22,<0.23", "huggingface_hub>=0.34,<1.0", "requests", "urllib3",
            "idna", "charset-normalizer", "certifi"]
TOKENIZER_FILES = ("sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json")

CONTEXTS = [
    " ".join(SENTENCES[0:5]),
    " ".join(SENTENCES[5:10]),
    "Paris is the capital of France. " + SENTENCES[16] + "  Berlin\tist die Hauptstadt, Madrid la capital.",
    " ".join(SENTENCES[13:16]),
]
QUESTIONS = ["What is the capital of France?", "Wer springt über den Hund?", "Где столица?", "東京は何ですか?"]
EXAMPLES = [{"question": q, "context": c} for q, c in zip(QUESTIONS, CONTEXTS, strict=True)]
WINDOWS = {"max_seq_len": 48, "doc_stride": 16}  # many windows of short texts

# name -> (inputs, options, tokenizer of the reference: "v5" = transformers 5's tokenizer.json)
CASES = {
    "one": (EXAMPLES[2], {}, "v5"),
    "windows": (EXAMPLES, WINDOWS, "v5"),
    "top_k": (EXAMPLES, {**WINDOWS, "top_k": 5}, "v5"),
    "impossible": (EXAMPLES, {**WINDOWS, "top_k": 3, "handle_impossible_answer": True}, "v5"),
    "impossible_top1": (EXAMPLES, {**WINDOWS, "handle_impossible_answer": True}, "v5"),
    "not_aligned": (EXAMPLES, {**WINDOWS, "top_k": 3, "align_to_words": False}, "v5"),
    "short_answers": (EXAMPLES, {"max_seq_len": 64, "doc_stride": 24, "top_k": 4, "max_answer_len": 3}, "v5"),
    "keywords": ({"question": QUESTIONS[:2], "context": CONTEXTS[2]}, WINDOWS, "v5"),
    "keyword_lists": ({"question": QUESTIONS[2:], "context": CONTEXTS[2:]}, {**WINDOWS, "top_k": 2}, "v5"),
    "v4_tokenizer": (EXAMPLES, WINDOWS, "v4"),
}

REFERENCE_SCRIPT = r'''
import json, sys
import transformers
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, XLMRobertaTokenizerFast, pipeline

spec = json.load(open(sys.argv[1]))
model = AutoModelForQuestionAnswering.from_pretrained(spec["checkpoint"])
tokenizers = {"v5": XLMRobertaTokenizerFast.from_pretrained(spec["tokenizer_v5"]),
              "v4": AutoTokenizer.from_pretrained(spec["checkpoint"])}
pipelines = {name: pipeline("question-answering", model=model, tokenizer=tok) for name, tok in tokenizers.items()}
answers = {}
for name, (inputs, options, tokenizer, keywords) in spec["cases"].items():
    qa = pipelines[tokenizer]
    answers[name] = qa(**inputs, **options) if keywords else qa(inputs, **options)
json.dump({"version": transformers.__version__, "fast": [t.is_fast for t in tokenizers.values()],
           "answers": answers}, open(sys.argv[2], "w"))
'''


@pytest.fixture(scope="session")
def transformers_457() -> Path:
    """transformers 4.57 and its own dependencies in a directory of their own (never the environment's
    site-packages), installed once into a cache directory and renamed into place when complete."""
    cache = Path(os.environ.get("XLMR_JAX_TEST_CACHE", Path.home() / ".cache" / "xlmr-jax-tests"))
    target = cache / "transformers-4.57"
    if not target.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=".transformers-4.57-"))
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "--target", str(staging), "--no-deps", *PIP_ARGS],
                              check=False, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            pytest.fail(f"could not install transformers 4.57 (the question-answering reference) into {target}:\n"
                        f"{done.stdout}\n{done.stderr}")
        try:
            staging.rename(target)
        except OSError:  # another session installed it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 302-token tiny model with every weight random; its start and end logits at `<s>` are raised
    (by about 6 over the other tokens') so that the empty answer sometimes wins."""
    model = build_reference("xlm-roberta", "XLMRobertaForQuestionAnswering", seed=0, vocab_size=302,
                            max_position_embeddings=130, num_labels=2)
    batch = transformers.AutoTokenizer.from_pretrained(TINY_CHECKPOINT)(
        QUESTIONS, CONTEXTS, truncation="only_second", max_length=48, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.roberta(**batch).last_hidden_state
        others = batch["attention_mask"].bool().clone()
        others[:, 0] = False
        towards_cls = hidden[:, 0].mean(0) - hidden[others].mean(0)
        model.qa_outputs.weight.add_(6.0 * towards_cls / towards_cls.dot(towards_cls))
    directory = save_reference(model, tmp_path_factory.mktemp("question-answering"))
    for name in TOKENIZER_FILES:
        shutil.copy(f"{TINY_CHECKPOINT}/{name}", directory)
    return directory


@pytest.fixture(scope="module")
def reference(checkpoint, transformers_457, tmp_path_factory):
    """Every case's answers from transformers 4.57's pipeline, in one subprocess."""
    work = tmp_path_factory.mktemp("qa-reference")
    tokenizer_v5 = work / "tokenizer-v5"
    tokenizer_v5.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy(f"{TINY_CHECKPOINT}/{name}", tokenizer_v5)
    transformers.AutoTokenizer.from_pretrained(TINY_CHECKPOINT).backend_tokenizer.save(
        str(tokenizer_v5 / "tokenizer.json"))
    cases = {name: (inputs, options, tokenizer, isinstance(inputs["question"], list) if isinstance(inputs, dict)
                    else False) for name, (inputs, options, tokenizer) in CASES.items()}
    (work / "spec.json").write_text(json.dumps({"checkpoint": checkpoint, "tokenizer_v5": str(tokenizer_v5),
                                                "cases": cases}))
    (work / "reference.py").write_text(REFERENCE_SCRIPT)
    path = [str(transformers_457), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, str(work / "reference.py"), str(work / "spec.json"),
                           str(work / "answers.json")], check=False, capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    result = json.loads((work / "answers.json").read_text())
    assert result["version"].startswith("4.57.") and result["fast"] == [True, True]
    return result["answers"]


@pytest.fixture(scope="module")
def ours(checkpoint):
    return xlmr_jax.pipeline("question-answering", checkpoint, batch_size=8)


def run_ours(ours, name):
    inputs, options, _ = CASES[name]
    if isinstance(inputs, dict) and isinstance(inputs["question"], list):
        return ours(**inputs, **options)
    return ours(inputs, **options)


def assert_same(mine, theirs):
    """Answers equal key for key; scores within 1e-4 (two computations), the rest exact."""
    if isinstance(theirs, list):
        assert isinstance(mine, list) and len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            assert_same(a, b)
        return
    assert isinstance(mine, dict) and sorted(mine) == ["answer", "end", "score", "start"]
    assert (mine["answer"], mine["start"], mine["end"]) == (theirs["answer"], theirs["start"], theirs["end"])
    assert abs(mine["score"] - theirs["score"]) <= 1e-4


@pytest.mark.parametrize("name", [name for name in CASES if name != "v4_tokenizer"])
def test_same_answers_as_the_reference_pipeline(ours, reference, name):
    assert_same(run_ours(ours, name), reference[name])


def test_the_cases_exercise_windows_and_merging(ours, reference):
    """The contexts need many windows, answers come from several of them, and a result's
    score can be the sum of spans with the same text (in overlapping windows)."""
    for example in EXAMPLES:
        windows = ours.preprocess(example, 0, ours.check_options({**ours.options, **WINDOWS}))
        assert len(windows) >= 4
    answers = [a for per_input in reference["top_k"] for a in per_input]
    assert len(answers) == 5 * len(EXAMPLES) and len({a["start"] for a in answers}) > len(EXAMPLES)
    assert any(a["answer"] == "" for per_input in reference["impossible"] for a in per_input)
    assert any(a["answer"] == "" for a in reference["impossible_top1"])  # the null answer can win
    assert any(a["answer"] != "" for a in reference["impossible_top1"])


def test_transformers_4_tokenizer_only_adds_the_space_before(ours, reference):
    """transformers 4.57's own tokenizer maps a word's "▁" to the space before it: its answers are ours
    with that one character in front; scores are equal."""
    mine, theirs = run_ours(ours, "v4_tokenizer"), reference["v4_tokenizer"]
    widened = 0
    for example, a, b in zip(EXAMPLES, mine, theirs, strict=True):
        assert b["end"] == a["end"] and abs(a["score"] - b["score"]) <= 1e-4
        if b["start"] != a["start"]:
            widened += 1
            assert b["start"] == a["start"] - 1 and example["context"][b["start"]].isspace()
            assert b["answer"][1:] == a["answer"]
    assert widened >= 1


def test_input_forms(ours):
    example = EXAMPLES[2]
    one = ours(example)
    assert isinstance(one, dict)
    assert ours([example]) == one  # a list of one gives one result, as in the reference
    assert ours(example["question"], example["context"]) == one
    assert ours(question=example["question"], context=example["context"]) == one
    two = ours([example, EXAMPLES[0]])  # batched with another input: other padding, the same answer
    assert isinstance(two, list) and len(two) == 2
    assert_same(two[0], one)
    assert ours([]) == []
    several = ours(example, top_k=3)
    assert isinstance(several, list) and len(several) == 3
    assert several[0]["score"] >= several[1]["score"] >= several[2]["score"]
    for answer in several:
        assert example["context"][answer["start"]:answer["end"]] == answer["answer"]


def test_bad_input_is_named(ours):
    question = EXAMPLES[0]["question"]
    with pytest.raises(ValueError, match="input 1 has no 'context'"):
        ours([EXAMPLES[0], {"question": question}])
    with pytest.raises(ValueError, match="input 0: the question is empty"):
        ours({"question": "", "context": "Paris."})
    with pytest.raises(TypeError, match="input 0: the context must be a str, got NoneType"):
        ours({"question": question, "context": None})
    with pytest.raises(ValueError, match=r"input 0 has unknown key\(s\) \['answer'\]"):
        ours({"question": question, "context": "Paris.", "answer": "Paris"})
    with pytest.raises(TypeError, match="must be a dict"):
        ours(["What?"])
    with pytest.raises(ValueError, match="context= is missing"):
        ours(question=question)
    with pytest.raises(ValueError, match="2 questions but 1 contexts"):
        ours(question=[question, question], context=["Paris."])
    with pytest.raises(ValueError, match="the question's .* tokens leave 0 of max_seq_len=16"):
        ours(EXAMPLES[0], max_seq_len=16, doc_stride=4)
    with pytest.raises(ValueError, match=r"doc_stride \(50\) is larger than max_seq_len \(48\)"):
        ours(EXAMPLES[0], max_seq_len=48, doc_stride=50)
    with pytest.raises(ValueError, match="max_seq_len=200 is more than the 128 tokens the model takes"):
        ours(EXAMPLES[0], max_seq_len=200)
    for option in ("top_k", "max_answer_len"):
        with pytest.raises(ValueError, match=f"{option} must be an integer >= 1, got 0"):
            ours(EXAMPLES[0], **{option: 0})
    with pytest.raises(TypeError, match="handle_impossible_answer must be True or False"):
        ours(EXAMPLES[0], handle_impossible_answer="yes")
    with pytest.raises(ValueError, match="unknown option"):
        ours(EXAMPLES[0], topk=2)


def test_top_indices_are_a_stable_descending_argsorts_first():
    from xlmr_jax.pipelines.answer_spans import top_indices

    rng = np.random.default_rng(0)
    for size, count in [(1, 1), (7, 3), (50, 50), (50, 80), (1000, 22)]:
        values = rng.integers(0, 6, size).astype(np.float32)  # many ties, at the cut too
        np.testing.assert_array_equal(top_indices(values, count), np.argsort(-values, kind="stable")[:count])
