"""Checkpoint conversion, HF PyTorch safetensors <-> our Flax format, streamed tensor by tensor.

No model is built: the target is planned abstractly (shapes only) against the source's headers,
every problem is reported at once, then each tensor is read, transformed (stack/unstack layers,
transpose kernels (in cache-sized tiles), optional dtype cast) and written in chunks of at most
16 MiB; worker threads read and transpose the next chunks while one thread writes. Peak memory is a
fixed overhead plus a few chunks, whatever the model size (benchmarks/results/convert_checkpoint.md:
peak RSS a fraction of the 1,024 MB largest tensor, converting a 2.24 GB checkpoint).
"""

from __future__ import annotations

import collections
import logging
import os
import resource
import time

import jax.numpy as jnp
import numpy as np

from xlmr_jax.pretrained import planned_checkpoint, read_config, resolve_pretrained_path, write_from_source
from xlmr_jax.registry import model_class_for
from xlmr_jax.staging import check_destination

logger = logging.getLogger("xlmr_jax")

TOKENIZER_FILES = ("sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def convert_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    to: str,
    dtype=None,
    architecture: str | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = "5GB",
    allow_pickle: bool = False,
    seed: int = 0,
    progress: bool = False,
    workers: int | None = None,
    **config_changes,
) -> dict:
    """Convert the checkpoint at `source` (directory or hub id) to `to` = "flax" or "pytorch" in
    `destination`. The model class comes from `architecture` (e.g. "XLMRobertaForSequenceClassification")
    or the config's `architectures`; a head the source lacks is initialised from `seed` and said;
    a head the target lacks is dropped and said. `dtype` casts (default: each tensor keeps its dtype,
    so a round trip is bit-exact). `workers` threads read and transpose the next tensors while one
    writes (default: the available cores less one, at least 1; 0: one thread does everything in turn). Returns a
    summary: tensors, bytes, files, seconds, peak_rss_bytes, workers.
    """
    if to not in ("flax", "pytorch"):
        raise ValueError(f"to={to!r}: expected 'flax' or 'pytorch'")
    if workers is None:  # with the writing thread, one thread per core
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = max(cores - 1, 1)
    if workers < 0:
        raise ValueError(f"workers={workers}: expected >= 0")
    started = time.perf_counter()
    directory = resolve_pretrained_path(source)
    # Refused before anything is read or written: a destination that is, holds or lies in the source.
    destination = check_destination(destination, sources=[directory], overwrite=overwrite)
    config = read_config(directory)
    if config_changes:
        config = config.replace(**config_changes)
    cls = model_class_for(config, architecture)
    target_dtype = None if dtype is None else np.dtype(jnp.dtype(dtype))
    with planned_checkpoint(cls, directory, config, seed=seed, allow_pickle=allow_pickle,
                            keep_source_dtype=target_dtype is None) as planned:
        from xlmr_jax.weights.sources import CheckpointSource

        _match_initialised_dtypes(planned, target_dtype)
        source_leaves = CheckpointSource(planned.checkpoint, planned.leaves, planned.initialised)
        extra = {name: os.path.join(directory, name) for name in TOKENIZER_FILES
                 if os.path.isfile(os.path.join(directory, name))}
        bar = _progress_bar(progress, to)
        try:
            summary = write_from_source(
                source_leaves, cls, config, destination, format=to, dtype=target_dtype,
                max_shard_size=max_shard_size, overwrite=overwrite, extra_files=extra,
                on_plan=(lambda tensors: bar.reset(total=len(tensors))) if bar is not None else None,
                on_tensor=(lambda t: bar.update(1)) if bar is not None else None,
                workers=workers,
            )
        finally:
            if bar is not None:
                bar.close()
    summary.update(model_class=cls.__name__, seconds=time.perf_counter() - started,
                   peak_rss_bytes=peak_rss_bytes(), workers=workers, initialised=planned.report.initialised,
                   dropped=planned.report.unused)
    return summary


def _match_initialised_dtypes(planned, target_dtype) -> None:
    """Fresh heads are stored like the rest of the checkpoint (its most common float dtype)."""
    if not planned.report.initialised:
        return
    counts = collections.Counter(
        leaf.dtype for leaf in planned.leaves.values() if leaf.rule is not None and leaf.dtype.kind in "fV"
    )
    dtype = target_dtype or (counts.most_common(1)[0][0] if counts else np.dtype(np.float32))
    for dotted in planned.report.initialised:
        planned.leaves[tuple(dotted.split("."))].dtype = dtype


def _progress_bar(enabled: bool, to: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=f"writing {to}", unit="tensor")


def format_summary(summary: dict) -> str:
    lines = [
        f"model class   {summary['model_class']}",
        f"tensors       {summary['tensors']} in {summary['files']} file(s)",
        f"bytes         {summary['bytes'] / 1e6:.1f} MB",
        f"seconds       {summary['seconds']:.2f}",
        f"peak RSS      {summary['peak_rss_bytes'] / 1e6:.0f} MB",
    ]
    if summary["initialised"]:
        lines.append(f"initialised   {', '.join(summary['initialised'])}")
    if summary["dropped"]:
        lines.append(f"dropped       {', '.join(summary['dropped'])}")
    return "\n".join(lines)
