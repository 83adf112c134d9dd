"""Checkpoints and synthetic task data for the fine-tuning tests.

Checkpoints: a reference model of the demo checkpoint's size and vocabulary (every weight random,
LayerNorm and biases too, so parity exercises each one), saved by `transformers` with the demo's
sentencepiece tokenizer beside it. Data: small tasks whose answer is a rule the test states (a
label decided by which words occur, tags on a class of words, an answer span after a marker
word, the ending that repeats the context's keyword), written as the files a user would give.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from reference_models import HF_CLASSES, randomise

from xlmr_jax.demo.make_checkpoint import ASSET_DIR

TOKENIZER_FILES = ("sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json")
FILLER = ("the", "a", "house", "river", "music", "stone", "window", "paper", "garden", "table", "light",
          "water", "story", "people", "morning", "friend", "market", "road", "bread", "letter")
GOOD, BAD = ("great", "lovely", "wonderful"), ("awful", "terrible", "boring")
CITIES = ("Paris", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Oslo", "Prague")
# Single pieces in the demo vocabulary: the ending that repeats one is a matter of one token.
CHOICE_WORDS = ("Save", "Delete", "Search", "Image")


def make_checkpoint(directory, arch: str, *, seed: int = 0, **config_overrides) -> str:
    """An HF checkpoint of `arch` with the demo's dimensions and tokenizer (dropout off unless asked)."""
    import transformers

    config = transformers.XLMRobertaConfig.from_pretrained(ASSET_DIR)
    settings = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    settings.update(config_overrides)
    for key, value in settings.items():
        setattr(config, key, value)
    config._attn_implementation = "eager"
    import torch

    torch.manual_seed(seed)
    model = HF_CLASSES["xlm-roberta"][arch](config)
    randomise(model, seed)
    model.save_pretrained(str(directory))
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(ASSET_DIR, name), os.path.join(directory, name))
    return str(directory)


# Throughput figures of a run's log: clock readings, never equal between two runs.
TIMINGS = ("tokens_per_s", "samples_per_s")


def read_metrics(output, *, without_timings: bool = False) -> list[dict]:
    """The records of a run's `metrics.jsonl`, optionally without the throughput figures."""
    with open(os.path.join(output, "metrics.jsonl"), encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    if without_timings:
        records = [{k: v for k, v in record.items() if k not in TIMINGS} for record in records]
    return records


def write_jsonl(path, records: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return str(path)


def _words(rng: np.random.Generator, low: int, high: int) -> list[str]:
    return [str(w) for w in rng.choice(FILLER, size=int(rng.integers(low, high)))]


def sentiment_records(count: int, seed: int) -> list[dict]:
    """`label` is "pos" when the text holds a word of GOOD, "neg" when one of BAD (never both)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        words = _words(rng, 3, 12)
        positive = i % 2 == 0
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(GOOD if positive else BAD)))
        records.append({"sentence1": " ".join(words), "label": "pos" if positive else "neg"})
    return records


def ner_records(count: int, seed: int) -> list[dict]:
    """Words with `B-LOC` on the cities, `O` elsewhere."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(count):
        words = _words(rng, 3, 10)
        for _ in range(int(rng.integers(1, 3))):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(CITIES)))
        records.append({"tokens": words, "ner_tags": ["B-LOC" if w in CITIES else "O" for w in words]})
    return records


def qa_records(count: int, seed: int) -> list[dict]:
    """The answer is the city after the word "in"; SQuAD's flat JSON-lines form."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        before, after = " ".join(_words(rng, 2, 8)), " ".join(_words(rng, 2, 8))
        city = str(rng.choice(CITIES))
        context = f"{before} in {city} {after}"
        start = context.index(f" in {city}") + 4
        records.append({"id": f"q{i}", "question": "where is it?", "context": context,
                        "answers": {"text": [city], "answer_start": [start]}})
    return records


def choice_records(count: int, seed: int) -> list[dict]:
    """SWAG-like: the right ending names the keyword that `sent1` names."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(count):
        words = [str(c) for c in rng.permutation(CHOICE_WORDS)]
        label = int(rng.integers(0, 4))
        right = words[label]
        record = {"sent1": f"{' '.join(_words(rng, 2, 5))} {right}", "sent2": "so it was",
                  "label": label}
        for j, word in enumerate(words):
            record[f"ending{j}"] = f"{word} {' '.join(_words(rng, 1, 3))}"
        records.append(record)
    return records
