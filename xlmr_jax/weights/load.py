"""Streaming load of an HF checkpoint into an NNX model.

1. The model is built abstractly (`nnx.eval_shape`): shapes and dtypes, no memory.
2. Every checkpoint key is matched to exactly one rule of the table; every problem (unknown key,
   shape mismatch, missing tensor, config contradicting the weights) is collected, then raised
   together in one error.
3. Each leaf is created by `jax.make_array_from_callback`: the callback reads from the
   memory-mapped file only the slice the device holds, transposing and casting on the way.
   Host memory stays near the largest leaf, never the whole state dict.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from xlmr_jax.weights import table
from xlmr_jax.weights.checkpoint import CheckpointError, SafetensorsCheckpoint

logger = logging.getLogger("xlmr_jax")

# Leaves that may be missing from a checkpoint: freshly initialised, and said out loud.
_INITIALISABLE_BACKBONE = ("pooler.",)


@dataclasses.dataclass
class LeafPlan:
    path: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    rule: table.Rule | None = None
    sources: dict[int | None, str] = dataclasses.field(default_factory=dict)  # layer (or None) -> key


@dataclasses.dataclass
class LoadReport:
    loaded: list[str] = dataclasses.field(default_factory=list)
    initialised: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)


def _relative(key: str, hf_prefix: str) -> tuple[str, bool]:
    """(key relative to the backbone or to the top level, is_backbone); the `roberta.` prefix may be
    present or absent whatever the model (a head from a base checkpoint, or the reverse)."""
    for old, new in table.LEGACY_SUFFIXES.items():
        if key.endswith(old) and ("LayerNorm" in key or "layer_norm" in key):
            key = key[: -len(old)] + new
    stripped = key.removeprefix("roberta.")
    if stripped.startswith(table.BACKBONE_ROOTS):
        return stripped, True
    return key, False


def _flax_path(rule: table.Rule, hf_prefix: str) -> tuple[str, ...]:
    parts = tuple(rule.flax.split("."))
    return ((hf_prefix,) + parts) if rule.backbone and hf_prefix else parts


def plan_load(abstract_state, checkpoint: SafetensorsCheckpoint, hf_prefix: str, config, source: str):
    """Match checkpoint keys to leaves; returns ({path: LeafPlan}, LoadReport) or raises one error."""
    leaves = {
        tuple(str(p) for p in path): LeafPlan(tuple(str(p) for p in path), var.shape, np.dtype(var.dtype))
        for path, var in nnx.to_flat_state(abstract_state)
    }
    problems: list[str] = []
    report = LoadReport()
    num_layers = config.num_hidden_layers
    present = set(checkpoint.tensors)
    for key, info in sorted(checkpoint.tensors.items()):
        relative, backbone = _relative(key, hf_prefix)
        if backbone and relative in table.IGNORED_BACKBONE_KEYS:
            continue
        if not backbone and config.tie_word_embeddings and relative in table.TIED_ALIASES:
            canonical = table.TIED_ALIASES[relative]
            if canonical in present or f"roberta.{canonical}" in present:
                continue
            relative = canonical  # an alias standing in for a missing canonical key
        found = table.match(relative, backbone)
        if found is None:
            problems.append(f"unexpected tensor {key!r} {info.shape}: no rule of the weight table matches it")
            continue
        rule, layer = found
        path = _flax_path(rule, hf_prefix)
        leaf = leaves.get(path)
        if leaf is None:
            if not backbone and relative == table.TIED_DECODER_KEY and config.tie_word_embeddings:
                continue  # the tied decoder: same tensor as the word embeddings
            if (not backbone) or relative.startswith(_INITIALISABLE_BACKBONE):
                report.unused.append(key)  # another head's weights, or a pooler this model lacks
                continue
            problems.append(
                f"tensor {key!r} has no place in this model: the config "
                f"(model_type={config.model_type!r}, add_cross_attention={config.add_cross_attention}) "
                "contradicts the weights"
            )
            continue
        if layer is not None and layer >= num_layers:
            problems.append(f"tensor {key!r}: layer {layer} but config num_hidden_layers={num_layers}")
            continue
        expected = leaf.shape[1:] if rule.stacked else leaf.shape
        got = info.shape[::-1] if rule.transform == table.TRANSPOSE else info.shape
        if tuple(got) != tuple(expected):
            shown = f"{info.shape} (transposed: {got})" if rule.transform == table.TRANSPOSE else str(info.shape)
            problems.append(f"tensor {key!r} in {info.file}: shape {shown}, but the config expects "
                            f"{tuple(expected)} for {'.'.join(path)}")
            continue
        leaf.rule = rule
        leaf.sources[layer] = key
    for path, leaf in leaves.items():
        dotted = ".".join(path)
        if leaf.rule is not None and leaf.rule.stacked:
            missing_layers = sorted(set(range(num_layers)) - set(leaf.sources))
            if missing_layers:
                hf = _hf_name(leaf.rule, hf_prefix, missing_layers[0])
                problems.append(f"missing tensor(s) for {dotted}: layers {missing_layers} (e.g. {hf!r})")
            continue
        if leaf.rule is None:
            relative = dotted[len(hf_prefix) + 1:] if hf_prefix and dotted.startswith(hf_prefix + ".") else dotted
            in_backbone = (not hf_prefix and relative.startswith(table.BACKBONE_ROOTS)) or (
                hf_prefix and dotted.startswith(hf_prefix + "."))
            if in_backbone and not relative.startswith(_INITIALISABLE_BACKBONE):
                rule = table.rule_for_flax_path(relative)
                hf = _hf_name(rule, hf_prefix, 0) if rule else dotted
                problems.append(f"missing tensor {hf!r} (for {dotted}) in {source}")
            else:
                report.initialised.append(dotted)
    if problems:
        raise CheckpointError(f"cannot load {source}:\n  " + "\n  ".join(problems))
    report.loaded = sorted(".".join(p) for p, leaf in leaves.items() if leaf.rule is not None)
    return leaves, report


def _hf_name(rule: table.Rule, hf_prefix: str, layer: int) -> str:
    key = rule.hf_key(layer)
    return f"{hf_prefix}.{key}" if rule.backbone and hf_prefix else key


def read_leaf_slice(checkpoint: SafetensorsCheckpoint, leaf: LeafPlan, index: tuple[slice, ...]) -> np.ndarray:
    """The part `index` of a leaf, read from the checkpoint (only that part), cast to the leaf dtype."""
    rule = leaf.rule

    def read_one(key: str, sub: tuple[slice, ...]) -> np.ndarray:
        if rule.transform == table.TRANSPOSE:
            return np.ascontiguousarray(checkpoint.read(key, sub[::-1]).T)
        return checkpoint.read(key, sub)

    index = tuple(index) + (slice(None),) * (len(leaf.shape) - len(index))
    if rule.stacked:
        layers = range(leaf.shape[0])[index[0]]
        parts = [read_one(leaf.sources[i], index[1:]) for i in layers]
        out = np.stack(parts) if parts else np.zeros((0,), leaf.dtype)
    else:
        out = read_one(leaf.sources[None], index)
    return out.astype(leaf.dtype, copy=False)


def materialise(
    checkpoint: SafetensorsCheckpoint,
    leaves: dict[tuple[str, ...], LeafPlan],
    sharding_for: Callable[[tuple[str, ...], tuple[int, ...]], jax.sharding.Sharding],
) -> dict[tuple[str, ...], jax.Array]:
    """One device array per loaded leaf, each device reading only its own slice."""
    arrays = {}
    for path, leaf in leaves.items():
        if leaf.rule is None:
            continue
        sharding = sharding_for(path, leaf.shape)
        arrays[path] = jax.make_array_from_callback(
            leaf.shape, sharding, lambda idx, leaf=leaf: read_leaf_slice(checkpoint, leaf, idx)
        )
    return arrays
