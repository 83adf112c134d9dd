"""A minimal ragged array: one flat numpy buffer plus row lengths.

Batch tokenisation keeps every per-row step (truncation windows, special tokens, padding) as a few
vectorised numpy operations over the whole batch instead of a Python loop per sentence; that is
what keeps the Python side from dominating sentencepiece's multi-threaded C++ encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain

import numpy as np


@dataclass(frozen=True)
class Ragged:
    """Rows of varying length stored as ``values`` (rows concatenated) and ``lengths``.

    ``values`` may carry trailing dimensions, e.g. ``(total, 2)`` for character offsets.
    """

    values: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence], dtype: type = np.int32) -> Ragged:
        """Build from Python lists of scalars."""
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        total = int(lengths.sum())
        values = np.fromiter(chain.from_iterable(rows), dtype=dtype, count=total)
        return cls(values, lengths)

    @classmethod
    def from_pair_rows(cls, rows: Sequence[Sequence[tuple[int, int]]], dtype: type = np.int32) -> Ragged:
        """Build from Python lists of ``(start, end)`` tuples into ``values`` of shape ``(total, 2)``."""
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        total = int(lengths.sum())
        flat = chain.from_iterable(chain.from_iterable(rows))
        values = np.fromiter(flat, dtype=dtype, count=2 * total).reshape(total, 2)
        return cls(values, lengths)

    @classmethod
    def constant(cls, value: int | Sequence[int], n_rows: int, dtype: type = np.int32) -> Ragged:
        """``n_rows`` rows holding one copy of ``value`` each (a special token, its offsets, ...)."""
        item = np.asarray(value, dtype=dtype)
        values = np.broadcast_to(item, (n_rows, *item.shape)).copy()
        return cls(values, np.ones(n_rows, dtype=np.int64))

    @classmethod
    def empty_rows(cls, n_rows: int, item_shape: tuple[int, ...] = (), dtype: type = np.int32) -> Ragged:
        """``n_rows`` rows of length zero."""
        return cls(np.zeros((0, *item_shape), dtype=dtype), np.zeros(n_rows, dtype=np.int64))

    @property
    def n_rows(self) -> int:
        return len(self.lengths)

    @cached_property
    def starts(self) -> np.ndarray:
        """Offset of each row in ``values``."""
        return np.cumsum(self.lengths) - self.lengths

    def row(self, index: int) -> np.ndarray:
        start = int(self.starts[index])
        return self.values[start : start + int(self.lengths[index])]

    def windows(self, rows: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> Ragged:
        """New rows ``self[rows[k]][starts[k]:stops[k]]`` (truncation and overflow windows)."""
        lengths = (stops - starts).astype(np.int64)
        positions = _run_positions(lengths, self.starts[rows] + starts)
        return Ragged(self.values[positions], lengths)

    def take_rows(self, rows: np.ndarray) -> Ragged:
        """Whole rows in the given order (rows may repeat)."""
        lengths = self.lengths[rows]
        return Ragged(self.values[_run_positions(lengths, self.starts[rows])], lengths)

    def merge_consecutive(self, group_sizes: np.ndarray) -> Ragged:
        """Concatenate each run of ``group_sizes[g]`` consecutive rows into one row (sizes >= 1)."""
        group_starts = np.cumsum(group_sizes) - group_sizes
        return Ragged(self.values, np.add.reduceat(self.lengths, group_starts))

    def to_lists(self) -> list[list]:
        """Rows as Python lists (tuples for trailing dimensions, like the reference's offsets)."""
        if self.values.ndim == 1:
            flat = self.values.tolist()
        else:
            flat = list(map(tuple, self.values.tolist()))
        bounds = np.cumsum(self.lengths).tolist()
        return [flat[start:stop] for start, stop in zip([0, *bounds[:-1]], bounds)]

    def to_dense(self, width: int, pad_value: int | Sequence[int]) -> np.ndarray:
        """A ``(rows, width, ...)`` array, rows left-aligned and filled with ``pad_value``."""
        dense = np.empty((self.n_rows, width, *self.values.shape[1:]), dtype=self.values.dtype)
        dense[...] = pad_value
        # Row-major boolean assignment visits the kept cells exactly in ``values`` order.
        dense[np.arange(width) < self.lengths[:, None]] = self.values
        return dense


def _run_positions(run_lengths: np.ndarray, run_starts: np.ndarray) -> np.ndarray:
    """Flat indices of consecutive runs: ``run_lengths[r]`` indices counting up from ``run_starts[r]``."""
    total = int(run_lengths.sum())
    packed_starts = np.cumsum(run_lengths) - run_lengths
    return np.arange(total, dtype=np.int64) + np.repeat(run_starts - packed_starts, run_lengths)


def concat_rowwise(parts: Sequence[Ragged]) -> Ragged:
    """Row ``r`` of the result is ``parts[0][r] + parts[1][r] + ...`` (all parts have equal rows)."""
    lengths = sum(part.lengths for part in parts)
    out_starts = np.cumsum(lengths) - lengths
    first = parts[0].values
    values = np.empty((int(lengths.sum()), *first.shape[1:]), dtype=first.dtype)
    cursor = out_starts.copy()
    for part in parts:
        if len(part.values):
            values[_run_positions(part.lengths, cursor)] = part.values
        cursor += part.lengths
    return Ragged(values, lengths)
