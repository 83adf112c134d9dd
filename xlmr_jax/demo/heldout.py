"""Held-out masked-token accuracy of a masked LM, against predicting the most frequent tokens.

The held-out lines are packed as the training text is (each line's tokens followed by `</s>`, rows
of `<s>` + up to `max_length - 1` tokens), one language per row, so that a row is text of one
language as in training. In each row 15% of the tokens that are not `<s>`/`</s>` (at least one)
are replaced by `<mask>`, at positions drawn from a generator seeded by the row's index: every run
masks the same tokens. A mask is right at top-k when its original token is among the k highest
logits. The baseline answers every mask with the k tokens most frequent in the training text.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Sequence

import numpy as np

MASK_FRACTION = 0.15
SEED = 12


def read_heldout(path: str) -> list[tuple[str, str]]:
    """(language, text) of each line of a `language<TAB>text` file."""
    with open(path, encoding="utf-8") as fh:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in fh if line.strip()]


def most_frequent_tokens(tokenizer, lines: Sequence[str], k: int = 5) -> list[int]:
    """The ids of the `k` most frequent tokens of `lines` (special tokens excluded; ties by id)."""
    counts = collections.Counter()
    encoded = tokenizer(list(lines), add_special_tokens=False, return_attention_mask=False, return_tensors=None)
    for ids in encoded["input_ids"]:
        counts.update(int(i) for i in ids)
    return [token for token, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]]


def packed_rows(tokenizer, heldout: Sequence[tuple[str, str]], max_length: int = 128) -> list[tuple[str, np.ndarray]]:
    """(language, ids) rows: each language's lines packed into `<s>` + `max_length - 1` tokens."""
    rows = []
    for language, pairs in itertools.groupby(heldout, key=lambda pair: pair[0]):
        texts = [text for _, text in pairs]
        encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, return_tensors=None)
        stream = [i for ids in encoded["input_ids"] for i in (*ids, tokenizer.eos_token_id)]
        body = max_length - 1
        for start in range(0, len(stream), body):
            rows.append((language, np.asarray([tokenizer.bos_token_id, *stream[start:start + body]], np.int32)))
    return rows


def masked_rows(tokenizer, rows: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(masked input ids, mask positions, original ids at them) per row, deterministically."""
    examples = []
    for index, ids in enumerate(rows):
        candidates = np.flatnonzero(~np.isin(ids, [tokenizer.bos_token_id, tokenizer.eos_token_id]))
        count = max(1, math.ceil(MASK_FRACTION * len(candidates)))
        positions = np.sort(np.random.default_rng([SEED, index]).choice(candidates, count, replace=False))
        masked = ids.copy()
        masked[positions] = tokenizer.mask_token_id
        examples.append((masked, positions, ids[positions]))
    return examples


def heldout_accuracy(model, tokenizer, heldout: Sequence[tuple[str, str]], baseline_ids: Sequence[int],
                     batch_size: int = 32) -> dict:
    """Top-1 and top-5 accuracy over every mask of `heldout` ((language, text) pairs, grouped by
    language), overall and per language, next to the most-frequent-token baseline's."""
    import xlmr_jax

    forward = xlmr_jax.jit_forward(model)
    rows = packed_rows(tokenizer, heldout)
    examples = masked_rows(tokenizer, [ids for _, ids in rows])
    width = max(len(ids) for ids, _, _ in examples)
    hits = collections.defaultdict(lambda: np.zeros(5, np.int64))  # language -> masks, top1, top5, base1, base5
    for start in range(0, len(examples), batch_size):
        chunk = range(start, min(start + batch_size, len(examples)))
        ids = np.full((batch_size, width), tokenizer.pad_token_id, np.int32)  # one shape: one compile
        for row, i in enumerate(chunk):
            ids[row, :len(examples[i][0])] = examples[i][0]
        logits = forward(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).astype(np.int32)).logits
        logits = np.asarray(logits)
        for row, i in enumerate(chunk):
            _, positions, targets = examples[i]
            top5 = np.argsort(-logits[row, positions], axis=-1, kind="stable")[:, :5]
            counts = hits[rows[i][0]]
            counts += [len(targets), (top5[:, 0] == targets).sum(), (top5 == targets[:, None]).any(axis=1).sum(),
                       (targets == baseline_ids[0]).sum(), np.isin(targets, baseline_ids[:5]).sum()]

    def scores(counts):
        masks = int(counts[0])
        return {"masks": masks, "top1": counts[1] / masks, "top5": counts[2] / masks,
                "baseline_top1": counts[3] / masks, "baseline_top5": counts[4] / masks}

    return {"lines": len(heldout), "rows": len(rows), **scores(sum(hits.values())),
            "per_language": {language: scores(counts) for language, counts in hits.items()}}
