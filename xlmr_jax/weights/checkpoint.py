"""Finding and reading checkpoints lazily: HF PyTorch (safetensors, single or sharded; optionally
`pytorch_model.bin`) and our Flax format (safetensors keyed by Flax paths).

Nothing is read until a tensor (or a slice of one) is asked for; headers give names, shapes and
dtypes, so a whole load can be planned and checked before a byte of weights moves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat

import numpy as np

from xlmr_jax.weights.safetensors_io import FileRange, SafetensorsFormatError, SafetensorsReader

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
FLAX_WEIGHTS = "flax_model.safetensors"
FLAX_INDEX = "flax_model.safetensors.index.json"

PYTORCH = "pytorch"
FLAX = "flax"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as asked; the message names the file and key."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    key: str
    file: str
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    format: str  # PYTORCH or FLAX
    files: list[str]
    index: str | None
    pickle: bool = False  # pytorch_model.bin


def _read_index(index: str) -> dict[str, str]:
    try:
        with open(index, encoding="utf-8") as fh:
            weight_map = json.load(fh)["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index}: not a checkpoint index with a 'weight_map' ({err})") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: 'weight_map' must map tensor names to file names")
    bad = [f"{k!r}: {v!r}"[:80] for k, v in weight_map.items() if not (isinstance(v, str) and _plain_name(v))]
    if bad:
        raise CheckpointError(f"{index}: 'weight_map' must give each tensor a file name in the same "
                              f"directory, got {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
    return weight_map


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and os.path.basename(name) == name


def _is_file(path: str) -> bool:
    """False if nothing is there; an error if something is there that cannot be read as a file
    (a directory, a symlink loop or a dangling link), rather than reporting it as absent."""
    if not os.path.lexists(path):
        return False
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            return True
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror})") from None
    raise CheckpointError(f"{path}: not a regular file")


def _from_index(directory: str, index_name: str, fmt: str, pickle: bool = False) -> CheckpointFiles:
    index = os.path.join(directory, index_name)
    files = sorted(set(_read_index(index).values()))
    missing = [f for f in files if not _is_file(os.path.join(directory, f))]
    if missing:
        raise CheckpointError(f"{index} lists shard(s) that do not exist in {directory}: {missing[:5]}")
    return CheckpointFiles(fmt, [os.path.join(directory, f) for f in files], index, pickle)


def find_checkpoint_files(directory: str, allow_pickle: bool = False) -> CheckpointFiles:
    """Which weights a directory holds. Safetensors first; our Flax format; pickles only if allowed."""
    def exists(name: str) -> bool:  # asked in order: a stray entry further down does not matter
        return _is_file(os.path.join(directory, name))

    if exists(SAFE_INDEX):
        return _from_index(directory, SAFE_INDEX, PYTORCH)
    if exists(SAFE_WEIGHTS):
        return CheckpointFiles(PYTORCH, [os.path.join(directory, SAFE_WEIGHTS)], None)
    if exists(FLAX_INDEX):
        return _from_index(directory, FLAX_INDEX, FLAX)
    if exists(FLAX_WEIGHTS):
        return CheckpointFiles(FLAX, [os.path.join(directory, FLAX_WEIGHTS)], None)
    if exists(TORCH_INDEX) or exists(TORCH_WEIGHTS):
        if not allow_pickle:
            raise CheckpointError(
                f"{directory} holds only {TORCH_WEIGHTS} weights, a pickle format that can run code when "
                "loaded; pass allow_pickle=True (CLI: --allow-pickle) to read them with torch "
                "(weights_only=True), or convert them to safetensors"
            )
        if exists(TORCH_INDEX):
            return _from_index(directory, TORCH_INDEX, PYTORCH, pickle=True)
        return CheckpointFiles(PYTORCH, [os.path.join(directory, TORCH_WEIGHTS)], None, pickle=True)
    raise CheckpointError(
        f"no weights in {directory}: expected {SAFE_WEIGHTS}, {SAFE_INDEX}, {FLAX_WEIGHTS} or {FLAX_INDEX}"
    )


class Checkpoint(contextlib.AbstractContextManager):
    """Every tensor of a (possibly sharded) checkpoint, read on demand."""

    def __init__(self, found: CheckpointFiles):
        self.format = found.format
        self.tensors: dict[str, TensorInfo] = {}
        self.metadata: dict[str, str] = {}
        self._readers: dict[str, object] = {}
        try:
            for path in found.files:
                reader = _open_torch(path) if found.pickle else _open_safetensors(path)
                self._readers[path] = reader
                self.metadata.update(getattr(reader, "metadata", {}))
                for key, (shape, dtype) in reader.describe().items():
                    if key in self.tensors:
                        raise CheckpointError(f"tensor {key!r} appears in both {self.tensors[key].file} and {path}")
                    self.tensors[key] = TensorInfo(key, path, shape, dtype)
            if found.index is not None:
                self._check_index(found.index)
        except BaseException:
            self.close()
            raise

    def _check_index(self, index: str) -> None:
        weight_map = _read_index(index)
        for key, file in weight_map.items():
            info = self.tensors.get(key)
            if info is None:
                raise CheckpointError(f"{index} lists {key!r} in {file}, but that shard has no such tensor")
            if os.path.basename(info.file) != file:
                raise CheckpointError(f"{index} lists {key!r} in {file}, but it is in {info.file}")
        unlisted = sorted(set(self.tensors) - set(weight_map))
        if unlisted:
            raise CheckpointError(f"{index} does not list tensors found in its shards: {unlisted[:5]}")

    def read(self, key: str, index: tuple[slice, ...] | None = None, mapped: bool = False) -> np.ndarray:
        """A tensor, or only the part `index` of it (what one device's shard needs). `mapped`: a
        read-only view of a memory map where the file allows (see `SafetensorsReader.read`)."""
        info = self.tensors[key]
        reader = self._readers[info.file]
        try:
            if isinstance(reader, SafetensorsReader):
                return reader.read(key, index, mapped=mapped)
            return reader.read(key, index)
        except (SafetensorsFormatError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{info.file}: cannot read tensor {key!r} ({err})") from None

    def file_range(self, key: str, index: tuple[slice, ...] | None = None) -> FileRange | None:
        """`tensor[index]` as bytes of its file to copy unchanged, where it is one contiguous run of a
        safetensors file (else None: read it)."""
        reader = self._readers[self.tensors[key].file]
        if not isinstance(reader, SafetensorsReader):
            return None
        try:
            return reader.file_range(key, index)
        except ValueError as err:
            raise CheckpointError(f"{reader.path}: cannot read tensor {key!r} ({err})") from None

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers = {}

    def __exit__(self, *exc):
        self.close()
        return False


class _SafetensorsFile(SafetensorsReader):
    def describe(self):
        return {name: (entry.shape, entry.dtype) for name, entry in self.entries.items()}


def _open_safetensors(path: str) -> _SafetensorsFile:
    try:
        return _SafetensorsFile(path)
    except SafetensorsFormatError as err:
        raise CheckpointError(str(err)) from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot open ({err})") from None


class _TorchBinFile:
    """`pytorch_model.bin` through torch.load(weights_only=True, mmap=True): no code runs."""

    def __init__(self, path: str):
        import torch

        try:
            self._state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is reported with the file
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
        self.path = path

    def describe(self):
        return {key: (tuple(t.shape), _torch_to_numpy_dtype(t.dtype)) for key, t in self._state.items()}

    def read(self, key: str, index=None) -> np.ndarray:
        import torch

        tensor = self._state[key]
        if index:
            tensor = tensor[tuple(index)]
        if tensor.dtype == torch.bfloat16:
            import ml_dtypes

            return tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return tensor.contiguous().numpy()

    def close(self) -> None:
        self._state = {}


def _torch_to_numpy_dtype(dtype) -> np.dtype:
    import ml_dtypes
    import torch

    if dtype == torch.bfloat16:
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(torch.empty((), dtype=dtype).numpy().dtype)


def _open_torch(path: str) -> _TorchBinFile:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CheckpointError(f"{path}: reading pytorch_model.bin needs torch (pip install torch)") from None
    return _TorchBinFile(path)
