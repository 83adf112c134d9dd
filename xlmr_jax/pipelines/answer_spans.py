"""Answer spans from start and end logits: the reference QA pipeline's scoring, shared by the
question-answering pipeline and the fine-tuning evaluation (one definition of what an answer is)."""

from __future__ import annotations

import dataclasses

import numpy as np

MASKED_LOGIT = -10000.0  # the reference's value for positions that cannot be in the answer


@dataclasses.dataclass(frozen=True)
class Window:
    """Where the context lies in one window's tokens, their character offsets in the context, and
    which of them begin a word."""

    context_start: int
    context_end: int
    offsets: np.ndarray
    starts_word: np.ndarray


def masked_softmax(logits: np.ndarray, window: Window) -> np.ndarray:
    """Softmax over the window with every position but `<s>` and the context's set to -10000."""
    allowed = np.zeros(len(logits), dtype=bool)
    allowed[0] = True
    allowed[window.context_start:window.context_end] = True
    logits = np.where(allowed, logits, np.float32(MASKED_LOGIT)).astype(np.float32)
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def best_spans(start: np.ndarray, end: np.ndarray, window: Window, max_answer_len: int, count: int):
    """(first token, last token, score) of the `count` best spans of the context, best first; a span
    is at most `max_answer_len` tokens long."""
    lo, hi = window.context_start, window.context_end
    if hi <= lo:
        return []
    scores = start[lo:hi, None] * end[None, lo:hi]
    offset = np.arange(hi - lo)[None, :] - np.arange(hi - lo)[:, None]  # last - first
    scores = np.where((offset >= 0) & (offset < max_answer_len), scores, np.float32(0))
    flat = scores.ravel()
    best = top_indices(flat, count)
    best = best[flat[best] > 0]
    firsts, lasts = np.unravel_index(best, scores.shape)
    return [(int(f) + lo, int(la) + lo, float(flat[b])) for f, la, b in zip(firsts, lasts, best, strict=True)]


def top_indices(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` largest values, largest first, equal values in index order: what a
    stable descending argsort's first `count` are, found with a partition (a window's span matrix
    holds ~10^5 scores, of which a few dozen are wanted)."""
    if count >= values.size:
        candidates = np.arange(values.size)
    else:
        kth = np.partition(values, values.size - count)[values.size - count]  # the count-th largest
        above = np.flatnonzero(values > kth)
        candidates = np.concatenate([above, np.flatnonzero(values == kth)[:count - above.size]])
    return candidates[np.lexsort((candidates, -values[candidates]))]


def widen_to_words(first: int, last: int, window: Window) -> tuple[int, int]:
    """The first token of the word holding `first` and the last of the word holding `last` (within the
    window's context)."""
    while first > window.context_start and not window.starts_word[first]:
        first -= 1
    while last + 1 < window.context_end and not window.starts_word[last + 1]:
        last += 1
    return first, last
