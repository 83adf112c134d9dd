"""Validation of what users pass to the tokenizer: one text, a batch, or pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TextBatch:
    """Inputs as parallel lists; ``batched`` is False when the caller passed a single text (or pair)."""

    first: list[str]
    second: list[str] | None
    batched: bool


def _is_batch(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _describe(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def _check_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"{where} must be a str, got {_describe(value)}")


def _is_pair(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2


def collect_texts(text: Any, text_pair: Any) -> TextBatch:
    """Turn ``text``/``text_pair`` into a :class:`TextBatch`, naming the offending index on bad input."""
    if isinstance(text, str):
        if text_pair is not None and not isinstance(text_pair, str):
            raise TypeError(
                f"text is a single str, so text_pair must be a str too, got {_describe(text_pair)}"
            )
        return TextBatch([text], None if text_pair is None else [text_pair], batched=False)
    if not _is_batch(text):
        raise TypeError(
            f"text must be a str, a list of str or a list of (str, str) pairs, got {_describe(text)}"
        )
    items = list(text)
    if text_pair is None and items and all(_is_pair(item) for item in items):
        first = [_check_text(item[0], f"text[{index}][0]") for index, item in enumerate(items)]
        second = [_check_text(item[1], f"text[{index}][1]") for index, item in enumerate(items)]
        return TextBatch(first, second, batched=True)
    first = [_check_text(item, f"text[{index}]") for index, item in enumerate(items)]
    if text_pair is None:
        return TextBatch(first, None, batched=True)
    if not _is_batch(text_pair):
        raise TypeError(
            f"text is a batch, so text_pair must be a list of str too, got {_describe(text_pair)}"
        )
    pairs = list(text_pair)
    if len(pairs) != len(first):
        raise ValueError(f"text has {len(first)} items but text_pair has {len(pairs)}; they must match")
    second = [_check_text(item, f"text_pair[{index}]") for index, item in enumerate(pairs)]
    return TextBatch(first, second, batched=True)


def collect_id_rows(sequences: Any) -> list[Sequence[int]]:
    """Rows of ids for ``batch_decode``: a list of lists or a 2-D array."""
    if isinstance(sequences, np.ndarray) or hasattr(sequences, "__array__"):
        array = np.asarray(sequences)
        if array.ndim != 2:
            raise ValueError(f"batch_decode needs a 2-D array of ids, got shape {array.shape}")
        return list(array)
    if not _is_batch(sequences):
        raise TypeError(f"batch_decode needs a list of id sequences, got {_describe(sequences)}")
    return list(sequences)


def collect_ids(token_ids: Any) -> list[int]:
    """Ids for ``decode``: an int, a list of ints or a 1-D array (numpy or jax)."""
    if isinstance(token_ids, (int, np.integer)):
        return [int(token_ids)]
    array = np.asarray(token_ids)
    if array.ndim == 0:
        return [int(array)]
    if array.ndim != 1:
        raise ValueError(f"decode needs a 1-D sequence of ids, got shape {array.shape}; use batch_decode")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"decode needs integer ids, got dtype {array.dtype}")
    return array.astype(np.int64).tolist()
