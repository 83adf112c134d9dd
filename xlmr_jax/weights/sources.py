"""Where parameter values come from when writing: a model in memory, or a checkpoint on disk.

Both give leaves in the Flax layout (stacked layers, transposed kernels), read by slices of the
leading axis, so that writers can stream any tensor without holding a whole model.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx

from xlmr_jax.weights import table
from xlmr_jax.weights.checkpoint import Checkpoint
from xlmr_jax.weights.load import LeafPlan, read_leaf_slice
from xlmr_jax.weights.safetensors_io import FileRange
from xlmr_jax.weights.transpose import transposed_copy


@dataclasses.dataclass(frozen=True)
class LeafInfo:
    path: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype


class ModelSource:
    """The params of an NNX model (device arrays, copied to the host one slice at a time).

    When the params span several processes, a leaf is gathered whole (a collective: every process
    must read the same leaves in the same order, which writing the same checkpoint guarantees)
    and kept until the next leaf is asked for, so host memory holds one leaf at a time."""

    def __init__(self, model):
        self._arrays = {
            tuple(str(p) for p in path): var[...] for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
        }
        self.leaves = [LeafInfo(path, tuple(a.shape), np.dtype(a.dtype)) for path, a in self._arrays.items()]
        self._gathered: tuple[tuple[str, ...], np.ndarray] | None = None

    def read(self, path: tuple[str, ...], index: tuple[slice, ...] = ()) -> np.ndarray:
        array = self._arrays[path]
        if array.is_fully_addressable:
            return np.asarray(jax.device_get(array[index]))
        if self._gathered is None or self._gathered[0] != path:
            from jax.experimental import multihost_utils

            self._gathered = None  # free the previous leaf before gathering the next
            self._gathered = (path, np.asarray(multihost_utils.process_allgather(array, tiled=True)))
        return self._gathered[1][index]

    def file_range(self, path: tuple[str, ...], index: tuple[slice, ...], dtype: np.dtype) -> None:
        return None  # the values are in device memory, not in a file


class CheckpointSource:
    """Leaves planned against a checkpoint (see `load.plan_load`), plus freshly initialised ones."""

    def __init__(self, checkpoint: Checkpoint, plans: dict[tuple[str, ...], LeafPlan],
                 initialised: dict[tuple[str, ...], jax.Array]):
        self._checkpoint = checkpoint
        self._plans = plans
        self._initialised = initialised
        self.leaves = [LeafInfo(path, plan.shape, plan.dtype) for path, plan in plans.items()]

    def read(self, path: tuple[str, ...], index: tuple[slice, ...] = ()) -> np.ndarray:
        """The slice, possibly a read-only view of a memory map of the file: the writer copies or
        transposes it at once, so no copy is made in between."""
        plan = self._plans[path]
        if plan.rule is None:
            return np.asarray(self._initialised[path][index]).astype(plan.dtype)
        kernel_ndim = len(plan.shape) - (1 if plan.rule.stacked else 0)
        if plan.rule.transform == table.TRANSPOSE and kernel_ndim == 2:
            return self._read_transposed(plan, index)
        return read_leaf_slice(self._checkpoint, plan, index, mapped=True)

    def file_range(self, path: tuple[str, ...], index: tuple[slice, ...], dtype: np.dtype) -> FileRange | None:
        """The slice as bytes of the source file to copy unchanged, where it is stored as is (one
        tensor, not transposed, already in `dtype`, contiguous); else None."""
        plan = self._plans[path]
        if plan.rule is None or plan.rule.stacked or plan.rule.transform != table.COPY:
            return None
        key = plan.sources[None]
        if self._checkpoint.tensors[key].dtype != dtype:
            return None
        return self._checkpoint.file_range(key, index)

    def _read_transposed(self, plan: LeafPlan, index: tuple[slice, ...]) -> np.ndarray:
        """`read_leaf_slice` for kernels, with the tiled transpose (same values, several times faster)."""
        index = tuple(index) + (slice(None),) * (len(plan.shape) - len(index))
        if not plan.rule.stacked:
            return transposed_copy(self._checkpoint.read(plan.sources[None], index[::-1], mapped=True),
                                   dtype=plan.dtype)
        layers = range(plan.shape[0])[index[0]]
        kernel = index[1:]
        shape = (len(layers), *(len(range(n)[s]) for n, s in zip(plan.shape[1:], kernel, strict=True)))
        out = np.empty(shape, plan.dtype)
        for row, layer in enumerate(layers):
            transposed_copy(self._checkpoint.read(plan.sources[layer], kernel[::-1], mapped=True), out=out[row])
        return out

