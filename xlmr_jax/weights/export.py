"""Writing checkpoints: HF PyTorch safetensors (that `transformers` loads with no warning) and our
Flax format, both streamed tensor by tensor, sharded above a size, and written all-or-nothing.

Flax format (version 1): a directory with the HF `config.json` and `flax_model.safetensors` (or
shards `flax_model-0000i-of-0000n.safetensors` + `flax_model.safetensors.index.json`) whose keys
are the dot-joined Flax paths of the model (`roberta.encoder.layer.attention.self.query.kernel`,
stacked on a leading layer axis). File metadata: format=flax, xlmr_jax_format_version, model
class. Readable without this library:
    flax.traverse_util.unflatten_dict(safetensors.numpy.load_file(path), sep=".")
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable

import numpy as np

from xlmr_jax.atomic_files import write_json_atomic
from xlmr_jax.staging import DestinationExistsError, staged_directory
from xlmr_jax.weights import table
from xlmr_jax.weights.checkpoint import FLAX_INDEX, FLAX_WEIGHTS, SAFE_INDEX, SAFE_WEIGHTS
from xlmr_jax.weights.safetensors_io import CHUNK_BYTES, PartPrefetcher, PendingTensor, write_safetensors
from xlmr_jax.weights.transpose import transposed_copy

FLAX_FORMAT_VERSION = "1"
DEFAULT_MAX_SHARD_SIZE = 5 * 1024**3


__all__ = ["DestinationExistsError", "flax_tensors", "pytorch_tensors", "write_checkpoint"]


def parse_size(size: int | str) -> int:
    """"5GB", "500MB", "20KB" (powers of 1000, as transformers reads them) or a byte count."""
    if isinstance(size, int):
        return size
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*", size, flags=re.IGNORECASE)
    if not found:
        raise ValueError(f"max_shard_size={size!r}: expected a byte count or e.g. '5GB', '500MB'")
    value, unit = float(found.group(1)), (found.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
    return int(value * scale)


def _row_parts(read: Callable, shape: tuple[int, ...], itemsize: int, index_prefix: tuple = ()):
    """A leaf (or one layer of it) as parts of leading-axis rows of at most CHUNK_BYTES each."""
    def parts():
        if not shape:
            return [lambda: read(index_prefix)]
        row_bytes = max(int(np.prod(shape[1:], dtype=np.int64)) * itemsize, 1)
        step = max(CHUNK_BYTES // row_bytes, 1)
        return [lambda start=start: read((*index_prefix, slice(start, min(start + step, shape[0]))))
                for start in range(0, shape[0], step)]
    return parts


def _transposed_parts(read: Callable, shape: tuple[int, ...], itemsize: int, index_prefix: tuple = ()):
    """The weight (out, in) of a kernel (in, out) = `shape[::-1]`, as parts of output rows: each part
    reads a block of the kernel's columns and transposes it, so no part passes ~CHUNK_BYTES."""
    rows, columns = shape[1], shape[0]  # of the output
    step = max(CHUNK_BYTES // max(columns * itemsize, 1), 1)

    def parts():
        if step >= rows:  # one part: read whole, one contiguous read
            return [lambda: transposed_copy(read(index_prefix))]
        return [lambda start=start: transposed_copy(read((*index_prefix, slice(None), slice(start, min(start + step, rows)))))
                for start in range(0, rows, step)]
    return parts


def flax_tensors(source, dtype: np.dtype | None = None) -> list[PendingTensor]:
    tensors = []
    for leaf in source.leaves:
        out_dtype = np.dtype(dtype) if dtype is not None else leaf.dtype

        def read(index, path=leaf.path, out_dtype=out_dtype):
            found = source.file_range(path, index, out_dtype)  # stored as written: copied file to file
            return found if found is not None else source.read(path, index).astype(out_dtype, copy=False)

        tensors.append(PendingTensor(".".join(leaf.path), out_dtype, leaf.shape,
                                     _row_parts(read, leaf.shape, out_dtype.itemsize)))
    return tensors


def pytorch_tensors(source, hf_prefix: str, dtype: np.dtype | None = None) -> list[PendingTensor]:
    """HF keys and layouts through the weight table: per-layer tensors unstacked, kernels transposed."""
    tensors = []
    for leaf in source.leaves:
        dotted = ".".join(leaf.path)
        rule = table.rule_for_flax_path(table.split_model_path(dotted, hf_prefix)[0])
        if rule is None:
            raise ValueError(f"no rule of the weight table writes {dotted}")
        out_dtype = np.dtype(dtype) if dtype is not None else leaf.dtype
        layers = range(leaf.shape[0]) if rule.stacked else [None]
        shape = leaf.shape[1:] if rule.stacked else leaf.shape
        for layer in layers:
            tensors.append(_pytorch_tensor(source, leaf.path, table.hf_name(rule, hf_prefix, layer), rule, layer,
                                           shape, out_dtype))
    return sorted(tensors, key=lambda t: t.name)


def _pytorch_tensor(source, path, name, rule, layer, shape, out_dtype) -> PendingTensor:
    layer_index = () if layer is None else (slice(layer, layer + 1),)

    def read(index):
        data = source.read(path, index)
        return (data[0] if layer is not None else data).astype(out_dtype, copy=False)

    def copy_or_read(index):
        found = source.file_range(path, index, out_dtype)  # stored as written: copied file to file
        return found if found is not None else read(index)

    if rule.transform == table.TRANSPOSE:
        return PendingTensor(name, out_dtype, tuple(shape[::-1]),
                             _transposed_parts(read, tuple(shape), out_dtype.itemsize, layer_index))
    if layer is not None:
        return PendingTensor(name, out_dtype, tuple(shape), lambda: [lambda: copy_or_read(layer_index)])
    return PendingTensor(name, out_dtype, tuple(shape), _row_parts(copy_or_read, shape, out_dtype.itemsize))


def _shard(tensors: list[PendingTensor], max_shard_size: int) -> list[list[PendingTensor]]:
    shards: list[list[PendingTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def write_checkpoint(
    directory: str,
    tensors: list[PendingTensor],
    config_dict: dict,
    *,
    format: str,
    metadata: dict[str, str],
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    on_tensor: Callable[[PendingTensor], None] | None = None,
    extra_files: dict[str, str] | None = None,
    workers: int = 0,
) -> dict:
    """Write a checkpoint directory all-or-nothing (`xlmr_jax.staging`): everything goes to a staging
    directory beside the destination, renamed into place only when complete (a failed or interrupted
    write leaves the destination as it was). An existing destination is refused unless `overwrite`.
    `workers` > 0 threads compute the next parts while this one writes (`PartPrefetcher`)."""
    weights_name, index_name = (FLAX_WEIGHTS, FLAX_INDEX) if format == "flax" else (SAFE_WEIGHTS, SAFE_INDEX)
    started = time.perf_counter()
    with staged_directory(directory, overwrite=overwrite) as staging, contextlib.ExitStack() as stack:
        if workers > 0:
            tensors = stack.enter_context(PartPrefetcher(tensors, workers)).tensors()
        shards = _shard(tensors, parse_size(max_shard_size))
        weight_map, total = {}, 0
        stem, ext = weights_name.rsplit(".", 1)
        for i, shard in enumerate(shards, start=1):
            name = weights_name if len(shards) == 1 else f"{stem}-{i:05d}-of-{len(shards):05d}.{ext}"
            total += write_safetensors(os.path.join(staging, name), shard, metadata, on_tensor)
            weight_map.update({t.name: name for t in shard})
        if len(shards) > 1:
            index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": weight_map}
            write_json_atomic(os.path.join(staging, index_name), index, sort_keys=True)
        write_json_atomic(os.path.join(staging, "config.json"), config_dict, sort_keys=True)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, os.path.join(staging, name))
    return {"tensors": len(tensors), "bytes": total, "files": len(shards),
            "seconds": time.perf_counter() - started}
