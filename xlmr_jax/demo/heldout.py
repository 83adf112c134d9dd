"""Held-out masked-token accuracy of a masked LM, against predicting the most frequent tokens.

The held-out lines are made rows as the training text was: each line alone (`<s>` line `</s>`,
the demo model's recipe), or packed (each line's tokens followed by `</s>`, rows of `<s>` + up to
`max_length - 1` tokens, one language per row; the first demo model's). In each row 15% of the
tokens that are not `<s>`/`</s>` (at least one) are replaced by `<mask>`, at positions drawn from a
generator seeded by the row's index: every run masks the same tokens. A mask is right at top-k
when its original token is among the k highest logits. The baseline answers every mask with the k
tokens most frequent in the training text.

Accuracy alone hides what a small model knows: where it is unsure, its single best guess is the
most frequent token, exactly the baseline's, however well it ranks the rest. So the figures also
give the mean negative log-likelihood of the masked tokens (nats per mask; lower is better)
against a unigram model of the training text (token frequencies, add-one smoothed): the gap is
what the model has learnt from the context.
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


def token_counts(tokenizer, lines: Sequence[str]) -> np.ndarray:
    """How often each id of the vocabulary occurs in `lines` (no special tokens added)."""
    counts = np.zeros(len(tokenizer), np.int64)
    encoded = tokenizer(list(lines), add_special_tokens=False, return_attention_mask=False, return_tensors=None)
    for ids in encoded["input_ids"]:
        np.add.at(counts, np.asarray(ids, np.int64), 1)
    return counts


def most_frequent_tokens(tokenizer, lines: Sequence[str], k: int = 5) -> list[int]:
    """The ids of the `k` most frequent tokens of `lines` (special tokens excluded; ties by id)."""
    counts = token_counts(tokenizer, lines)
    present = np.flatnonzero(counts)
    return [int(i) for i in present[np.lexsort((present, -counts[present]))][:k]]


def unigram_log_probs(tokenizer, lines: Sequence[str]) -> np.ndarray:
    """log p(token) of a unigram model of `lines`, add-one smoothed over the vocabulary."""
    counts = token_counts(tokenizer, lines) + 1.0
    return np.log(counts / counts.sum())


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


def line_rows(tokenizer, heldout: Sequence[tuple[str, str]], max_length: int = 128) -> list[tuple[str, np.ndarray]]:
    """(language, ids) rows: each line alone, `<s>` line `</s>`, cut to `max_length` as training cuts it."""
    encoded = tokenizer([text for _, text in heldout], truncation=True, max_length=max_length,
                        return_attention_mask=False, return_tensors=None)
    return [(language, np.asarray(ids, np.int32)) for (language, _), ids in zip(heldout, encoded["input_ids"])]


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
                     unigram: np.ndarray | None = None, batch_size: int = 32, packed: bool = False) -> dict:
    """Top-1 and top-5 accuracy and the mean negative log-likelihood (`nll`, nats per mask) over
    every mask of `heldout` ((language, text) pairs, grouped by language), overall and per language,
    next to the most-frequent-token baseline's accuracy and, given `unigram` (`unigram_log_probs`),
    that unigram model's `baseline_nll`. `packed`: rows as `packed_rows` makes them, else `line_rows`."""
    import xlmr_jax

    forward = xlmr_jax.jit_forward(model)
    rows = (packed_rows if packed else line_rows)(tokenizer, heldout)
    examples = masked_rows(tokenizer, [ids for _, ids in rows])
    width = max(len(ids) for ids, _, _ in examples)
    hits = collections.defaultdict(lambda: np.zeros(5, np.int64))  # language -> masks, top1, top5, base1, base5
    nats = collections.defaultdict(lambda: np.zeros(2))  # language -> summed nll of the model, of the unigram
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
            at_masks = logits[row, positions].astype(np.float64)
            peak = at_masks.max(axis=-1)
            log_norm = peak + np.log(np.exp(at_masks - peak[:, None]).sum(axis=-1))
            nats[rows[i][0]] += [(log_norm - at_masks[np.arange(len(targets)), targets]).sum(),
                                 0.0 if unigram is None else -unigram[targets].sum()]

    def scores(counts, summed):
        masks = int(counts[0])
        out = {"masks": masks, "top1": counts[1] / masks, "top5": counts[2] / masks,
               "baseline_top1": counts[3] / masks, "baseline_top5": counts[4] / masks, "nll": summed[0] / masks}
        if unigram is not None:
            out["baseline_nll"] = summed[1] / masks
        return out

    return {"lines": len(heldout), "rows": len(rows), **scores(sum(hits.values()), sum(nats.values())),
            "per_language": {language: scores(counts, nats[language]) for language, counts in hits.items()}}
