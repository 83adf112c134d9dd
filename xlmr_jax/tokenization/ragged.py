"""A minimal ragged array: one flat numpy buffer plus row lengths.

Batch tokenisation keeps every per-row step (special tokens in the text, truncation windows,
padding) as a few vectorised numpy operations over the whole batch instead of a Python loop per
sentence; that is what keeps the Python side from dominating sentencepiece's C++ encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain

import numpy as np


def run_positions(run_lengths: np.ndarray, run_starts: np.ndarray) -> np.ndarray:
    """Flat indices of consecutive runs: ``run_lengths[r]`` indices counting up from ``run_starts[r]``."""
    total = int(run_lengths.sum())
    packed_starts = np.cumsum(run_lengths) - run_lengths
    return np.arange(total, dtype=np.int64) + np.repeat(run_starts - packed_starts, run_lengths)


@dataclass(frozen=True)
class Ragged:
    """Rows of varying length stored as ``values`` (rows concatenated) and ``lengths``.

    ``values`` may carry trailing dimensions, e.g. ``(total, 2)`` for character offsets.
    """

    values: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int]], dtype: type = np.int32) -> Ragged:
        """Build from Python lists of scalars."""
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        values = np.fromiter(chain.from_iterable(rows), dtype=dtype, count=int(lengths.sum()))
        return cls(values, lengths)

    @classmethod
    def from_pair_rows(cls, rows: Sequence[Sequence[tuple[int, int]]], dtype: type = np.int32) -> Ragged:
        """Build from Python lists of ``(start, end)`` tuples into ``values`` of shape ``(total, 2)``."""
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        total = int(lengths.sum())
        flat = chain.from_iterable(chain.from_iterable(rows))
        values = np.fromiter(flat, dtype=dtype, count=2 * total).reshape(total, 2)
        return cls(values, lengths)

    @cached_property
    def starts(self) -> np.ndarray:
        """Offset of each row in ``values``."""
        return np.cumsum(self.lengths) - self.lengths

    def take_rows(self, rows: np.ndarray) -> Ragged:
        """Whole rows in the given order (rows may repeat)."""
        lengths = self.lengths[rows]
        return Ragged(self.values[run_positions(lengths, self.starts[rows])], lengths)

    def merge_consecutive(self, group_sizes: np.ndarray) -> Ragged:
        """Concatenate each run of ``group_sizes[g]`` consecutive rows into one row (sizes >= 1)."""
        group_starts = np.cumsum(group_sizes) - group_sizes
        return Ragged(self.values, np.add.reduceat(self.lengths, group_starts))

    def to_lists(self) -> list[list]:
        """Rows as Python lists (tuples for trailing dimensions, like the reference's offsets)."""
        flat = self.values.tolist()
        if self.values.ndim > 1:
            flat = list(map(tuple, flat))
        bounds = np.cumsum(self.lengths).tolist()
        return [flat[start:stop] for start, stop in zip(self.starts.tolist(), bounds, strict=True)]
