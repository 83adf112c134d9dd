"""Helpers shared by the tokenizer tests."""

from __future__ import annotations

import numpy as np
import sentencepiece as spm

SPM_UNK = 0


def fairseq_ids_from_sentencepiece(processor: spm.SentencePieceProcessor, text: str) -> list[int]:
    """The fairseq recipe by hand: ``<s>`` + (piece id + 1, unknown -> 3) + ``</s>``."""
    return [0, *[3 if piece == SPM_UNK else piece + 1 for piece in processor.encode(text)], 2]


def as_lists(encoding: dict) -> dict:
    """A reference or our BatchEncoding as plain nested lists (tuples for offsets)."""
    converted = {}
    for key, value in encoding.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if key == "offset_mapping":
            value = _offsets_as_tuples(value)
        converted[key] = value
    return converted


def _offsets_as_tuples(value: list) -> list:
    if value and isinstance(value[0], (list, tuple)) and len(value[0]) == 2 and isinstance(value[0][0], int):
        return [tuple(span) for span in value]
    return [_offsets_as_tuples(row) for row in value]
