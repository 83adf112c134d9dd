"""Deterministic, resumable, length-bucketed batches of in-memory features, on grain.

Every process builds the same global batch order from the same arrays and seed, then takes its
own contiguous slice of each global batch, so a multi-host job sees one global batch per step.

An epoch's plan: rows are grouped by bucket (the smallest bucket that holds the row's length),
shuffled within their bucket, cut into global batches that never mix buckets, and the batches are
shuffled; both shuffles draw from one generator seeded by (seed, epoch). Sequence arrays of a batch
are cut (or padded) on their last axis to the batch's bucket, so a jitted step compiles once per
bucket. With `drop_remainder=True` (training) a bucket's last incomplete batch is dropped (other
rows of that bucket are dropped in the next epoch, as the shuffle changes); with False
(evaluation) it is filled up to the global batch size with padding rows.

Every batch carries two extra arrays, per process slice: `"__valid__"` (bool, False on padding
rows) and `"__index__"` (int64, the row's index in `arrays`, -1 on padding rows), so evaluation can
drop padding and put predictions back in dataset order.

grain does the iteration and its state: a `MapDataset` over the batch positions of one epoch,
repeated for the epochs and mapped, by global position, to that epoch's plan and the gathered
rows. Its iterator state (the next position) is exact, so resuming needs no replay.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import grain
import numpy as np

VALID_KEY = "__valid__"
INDEX_KEY = "__index__"


class BatchIterator:
    """This process's rows of each global batch, in an order fixed by `seed`; resumable exactly.

    `arrays` share a leading axis of N rows; those named in `sequence_keys` are padded on their last
    axis (one width for all) and `lengths[i]` is row i's real length. `pad_values[key]` fills the
    padding of every sequence array (required) and of the padding rows of any other array (0 when
    not given). `buckets=None` keeps the full width. `num_epochs=None` repeats forever.
    `get_state()` is a JSON-serialisable dict; `set_state` on an iterator built with the same
    arrays, batch size, buckets, seed and shuffle resumes at the next batch, whatever the process
    count (the global batch order does not depend on it).
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], lengths: np.ndarray, *,
                 sequence_keys: Sequence[str], pad_values: Mapping[str, int], global_batch_size: int,
                 buckets: Sequence[int] | None, shuffle: bool, seed: int, num_epochs: int | None,
                 process_index: int = 0, process_count: int = 1, drop_remainder: bool = True):
        self._arrays = {key: np.asarray(value) for key, value in arrays.items()}
        self._sequence_keys = tuple(sequence_keys)
        self._pad_values = dict(pad_values)
        self._lengths = _check_arrays(self._arrays, lengths, self._sequence_keys, self._pad_values)
        self._width = self._arrays[self._sequence_keys[0]].shape[-1]
        _check_positive_int("global_batch_size", global_batch_size)
        _check_positive_int("process_count", process_count)
        if global_batch_size % process_count:
            raise ValueError(f"global_batch_size {global_batch_size} must be divisible by process_count "
                             f"{process_count}: every process takes an equal slice of each global batch")
        if not isinstance(process_index, int | np.integer) or not 0 <= process_index < process_count:
            raise ValueError(f"process_index must be in [0, {process_count}), got {process_index!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if num_epochs is not None:
            _check_positive_int("num_epochs", num_epochs)
        self._global_batch_size = int(global_batch_size)
        per_process = global_batch_size // process_count
        self._local = slice(process_index * per_process, (process_index + 1) * per_process)
        self._shuffle = bool(shuffle)
        self._seed = int(seed)  # plain int: it goes into the JSON state
        self._drop_remainder = bool(drop_remainder)

        self._buckets = None if buckets is None else _check_buckets(buckets, self._lengths)
        if self._buckets is None:
            self._bucket_of_row = np.zeros(len(self._lengths), dtype=np.int64)
        else:
            self._bucket_of_row = np.searchsorted(np.array(self._buckets), self._lengths, side="left")
        num_buckets = 1 if self._buckets is None else len(self._buckets)
        self._rows_by_bucket = [np.flatnonzero(self._bucket_of_row == bucket) for bucket in range(num_buckets)]
        size = self._global_batch_size
        self._batches_per_epoch = sum(  # the last incomplete batch of a bucket: dropped, or padded
            len(rows) // size if self._drop_remainder else -(-len(rows) // size) for rows in self._rows_by_bucket)
        if self._batches_per_epoch == 0:
            sizes = [len(rows) for rows in self._rows_by_bucket]
            raise ValueError(f"no batch at all: with drop_remainder=True every batch needs "
                             f"global_batch_size={global_batch_size} rows of one bucket, but the buckets "
                             f"{list(self._buckets or [self._width])} hold {sizes} rows; use a smaller "
                             f"batch, fewer buckets or drop_remainder=False")
        self._plan_cache: tuple[int, np.ndarray] | None = None

        dataset = (grain.MapDataset.range(self._batches_per_epoch)
                   .repeat(num_epochs)
                   .map_with_index(self._batch))
        # The rows are already in memory: threads would only contend for the GIL (grain's advice).
        read_options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
        self._iterator = iter(dataset.to_iter_dataset(read_options))

    @property
    def batches_per_epoch(self) -> int:
        """Global batches in one epoch (the same for every epoch and every process)."""
        return self._batches_per_epoch

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    def get_state(self) -> dict:
        """JSON-serialisable position (the next batch) plus what must match to resume it."""
        return {"grain": _plain(self._iterator.get_state()), "config": self._config()}

    def set_state(self, state: dict) -> None:
        """Resume at the batch after the one `get_state` last saw; refuses a different data order."""
        if not isinstance(state, Mapping) or set(state) != {"grain", "config"}:
            raise ValueError(f"not a BatchIterator state (expected keys 'grain' and 'config'): {state!r:.200}")
        expected = self._config()
        different = {key: (state["config"].get(key), value) for key, value in expected.items()
                     if state["config"].get(key) != value}
        if different:
            raise ValueError("the saved batch order cannot be resumed by this iterator; "
                             + ", ".join(f"{key}: saved {saved!r}, now {now!r}"
                                         for key, (saved, now) in different.items()))
        self._iterator.set_state(dict(state["grain"]))

    # -- internals -------------------------------------------------------------------------------

    def _config(self) -> dict:
        # What fixes the global batch order; the process count and num_epochs do not.
        return {"num_rows": len(self._lengths),
                "lengths_crc32": zlib.crc32(self._lengths.astype("<i8").tobytes()),
                "global_batch_size": self._global_batch_size,
                "buckets": None if self._buckets is None else list(self._buckets),
                "shuffle": self._shuffle, "seed": self._seed, "drop_remainder": self._drop_remainder}

    def _epoch_plan(self, epoch: int) -> np.ndarray:
        """(batches_per_epoch, global_batch_size) row indices of one epoch, -1 for padding rows."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        size = self._global_batch_size
        rng = np.random.default_rng((self._seed, epoch))  # (seed, epoch): no overlap across seeds
        batches = []
        for rows in self._rows_by_bucket:
            if self._shuffle:
                rows = rng.permutation(rows)
            full = len(rows) // size * size
            batches.extend(rows[:full].reshape(-1, size))
            if not self._drop_remainder and full < len(rows):
                batches.append(np.concatenate([rows[full:], np.full(full + size - len(rows), -1)]))
        plan = np.stack(batches).astype(np.int64)
        if self._shuffle:
            plan = plan[rng.permutation(len(plan))]
        self._plan_cache = (epoch, plan)
        return plan

    def _batch(self, position: int, batch_in_epoch: int) -> dict[str, np.ndarray]:
        rows = self._epoch_plan(position // self._batches_per_epoch)[batch_in_epoch]
        # A batch holds one bucket and its first row is always real (padding rows come last).
        width = self._width if self._buckets is None else self._buckets[self._bucket_of_row[rows[0]]]
        local = rows[self._local]
        valid = local >= 0
        kept = local[valid]
        copied = min(width, self._width)
        batch = {}
        for key, array in self._arrays.items():
            sequence = key in self._sequence_keys
            shape = (len(local), *array.shape[1:-1], width) if sequence else (len(local), *array.shape[1:])
            if valid.all() and (not sequence or copied == width):
                batch[key] = array[local, ..., :width] if sequence else array[local]
                continue
            out = np.full(shape, self._pad_values.get(key, 0), dtype=array.dtype)
            if sequence:
                out[valid, ..., :copied] = array[kept, ..., :copied]
            else:
                out[valid] = array[kept]
            batch[key] = out
        batch[VALID_KEY] = valid
        batch[INDEX_KEY] = local
        return batch


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_arrays(arrays: dict[str, np.ndarray], lengths, sequence_keys: tuple[str, ...],
                  pad_values: dict[str, int]) -> np.ndarray:
    """Validated lengths as int64; raises naming the key for any inconsistent input."""
    if not arrays:
        raise ValueError("arrays is empty: nothing to batch")
    for key in arrays:
        if key in (VALID_KEY, INDEX_KEY):
            raise ValueError(f"arrays must not contain {key!r}: the iterator adds it to every batch")
    rows = {key: (array.shape[0] if array.ndim else None) for key, array in arrays.items()}
    if len(set(rows.values())) != 1 or None in rows.values():
        raise ValueError(f"arrays must share their leading (row) axis; got {rows}")
    num_rows = next(iter(rows.values()))
    if num_rows == 0:
        raise ValueError("arrays have no rows: nothing to batch")
    if not sequence_keys:
        raise ValueError("sequence_keys is empty: name the arrays padded on their last axis")
    for key in sequence_keys:
        if key not in arrays:
            raise ValueError(f"sequence key {key!r} is not in arrays (keys: {sorted(arrays)})")
        if arrays[key].ndim < 2:
            raise ValueError(f"sequence array {key!r} must have a last (sequence) axis; shape {arrays[key].shape}")
        if key not in pad_values:
            raise ValueError(f"pad_values has no value for sequence array {key!r}")
    widths = {key: arrays[key].shape[-1] for key in sequence_keys}
    if len(set(widths.values())) != 1:
        raise ValueError(f"sequence arrays must share one padded width; got {widths}")
    unknown = sorted(set(pad_values) - set(arrays))
    if unknown:
        raise ValueError(f"pad_values names keys that are not in arrays: {unknown}")
    lengths = np.asarray(lengths)
    if lengths.shape != (num_rows,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be {num_rows} integers (one per row), got shape {lengths.shape} "
                         f"and dtype {lengths.dtype}")
    width = next(iter(widths.values()))
    outside = np.flatnonzero((lengths < 0) | (lengths > width))
    if outside.size:
        raise ValueError(f"lengths must be in [0, {width}] (the sequence arrays' width); row {outside[0]} "
                         f"has {lengths[outside[0]]} ({outside.size} rows outside)")
    return lengths.astype(np.int64)


def _check_buckets(buckets: Sequence[int], lengths: np.ndarray) -> tuple[int, ...]:
    for bucket in buckets:
        _check_positive_int("every bucket", bucket)
    if not buckets:
        raise ValueError("buckets is empty: pass None to always use the full width")
    buckets = tuple(sorted({int(bucket) for bucket in buckets}))
    longest = int(np.argmax(lengths))
    if lengths[longest] > buckets[-1]:
        too_long = int(np.sum(lengths > buckets[-1]))
        raise ValueError(f"the largest bucket {buckets[-1]} is smaller than row {longest}'s length "
                         f"{lengths[longest]} ({too_long} rows are longer); add a bucket >= {lengths[longest]}")
    return buckets


def _plain(value):
    """grain's state as plain JSON types (numpy ints become ints)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, np.integer):
        return int(value)
    return value
