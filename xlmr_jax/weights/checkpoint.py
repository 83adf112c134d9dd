"""Reading HF safetensors checkpoints lazily: one file or shards listed in an index.

Nothing is read until a tensor (or a slice of one) is asked for; headers give names, shapes
and dtypes, so a whole load can be planned and checked before a byte of weights moves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import numpy as np
from safetensors import SafetensorError, safe_open

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as asked; the message names the file and key."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    key: str
    file: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name, e.g. "F32", "BF16"


def find_weight_files(directory: str) -> tuple[list[str], str | None]:
    """The safetensors files of an HF checkpoint directory, and its index file if sharded."""
    index = os.path.join(directory, SAFE_INDEX)
    single = os.path.join(directory, SAFE_WEIGHTS)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as fh:
                weight_map = json.load(fh)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index}: not a safetensors index (expected a 'weight_map'): {err}") from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
        if missing:
            raise CheckpointError(f"{index} lists shard(s) that do not exist in {directory}: {missing}")
        return [os.path.join(directory, f) for f in files], index
    if os.path.isfile(single):
        return [single], None
    if os.path.isfile(os.path.join(directory, TORCH_WEIGHTS)):
        raise CheckpointError(
            f"{directory} holds only {TORCH_WEIGHTS} (a pickle); convert it to safetensors first, e.g. "
            "with transformers: model.save_pretrained(dir, safe_serialization=True)"
        )
    raise CheckpointError(f"no {SAFE_WEIGHTS} or {SAFE_INDEX} in {directory}")


class SafetensorsCheckpoint(contextlib.AbstractContextManager):
    """Open handles on every file of a checkpoint; tensors are memory-mapped, read on demand."""

    def __init__(self, files: list[str], index: str | None = None):
        self._stack = contextlib.ExitStack()
        self._handles = {}
        self.tensors: dict[str, TensorInfo] = {}
        for path in files:
            handle = self._open(path)
            for key in handle.keys():  # noqa: SIM118 - a safe_open handle, not a dict
                if key in self.tensors:
                    raise CheckpointError(f"tensor {key!r} appears in both {self.tensors[key].file} and {path}")
                sl = handle.get_slice(key)
                self.tensors[key] = TensorInfo(key, path, tuple(sl.get_shape()), sl.get_dtype())
        if index is not None:
            self._check_index(index)

    def _open(self, path: str):
        try:
            handle = self._stack.enter_context(safe_open(path, framework="numpy"))
        except (SafetensorError, OSError, ValueError) as err:
            self._stack.close()
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
        self._handles[path] = handle
        return handle

    def _check_index(self, index: str) -> None:
        with open(index, encoding="utf-8") as fh:
            weight_map = json.load(fh)["weight_map"]
        directory = os.path.dirname(index)
        for key, file in weight_map.items():
            info = self.tensors.get(key)
            if info is None:
                raise CheckpointError(f"{index} lists {key!r} in {file}, but that shard has no such tensor")
            if os.path.basename(info.file) != file:
                raise CheckpointError(f"{index} lists {key!r} in {file}, found in {info.file}")
        unlisted = sorted(set(self.tensors) - set(weight_map))
        if unlisted:
            raise CheckpointError(f"{index} does not list tensors present in the shards of {directory}: "
                                  f"{unlisted[:5]}")

    def read(self, key: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
        """A tensor, or only the slice `index` of it (what one device's shard needs)."""
        info = self.tensors[key]
        try:
            if index is None:
                return self._handles[info.file].get_tensor(key)
            return self._handles[info.file].get_slice(key)[index]
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{info.file}: cannot read tensor {key!r} ({err})") from None

    def __exit__(self, *exc):
        self._stack.close()
        return False
