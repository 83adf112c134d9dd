"""Streaming load of an HF checkpoint into an NNX model.

1. The model is built abstractly (`nnx.eval_shape`): shapes and dtypes, no memory.
2. Every checkpoint key is matched to exactly one rule of the table; every problem (unknown key,
   shape mismatch, missing tensor, config contradicting the weights) is collected, then raised
   together in one error.
3. Each leaf is created by `jax.make_array_from_callback`: the callback reads from the file
   (positioned reads, no memory map) only the bytes of the slice the device holds, transposing
   and casting on the way. Host memory beyond the placed arrays stays near one leaf's slice,
   never the whole state dict.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlmr_jax.weights import table
from xlmr_jax.weights.checkpoint import FLAX, Checkpoint, CheckpointError

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
    initialised: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)


def _relative(key: str, legacy_names: bool) -> tuple[str, bool]:
    """(key relative to the backbone or to the top level, is_backbone); the `roberta.` prefix may be
    present or absent whatever the model (a head from a base checkpoint, or the reverse)."""
    if legacy_names:
        for old, new in table.LEGACY_SUFFIXES.items():
            if key.endswith(old) and ("LayerNorm" in key or "layer_norm" in key):
                key = key[: -len(old)] + new
    stripped = key.removeprefix("roberta.")
    if stripped.startswith(table.BACKBONE_ROOTS):
        return stripped, True
    return key, False


def _match_pytorch_key(key, info, leaves, hf_prefix, config, present):
    """(leaf, rule, layer) for an HF key, None to skip it, or a problem string."""
    relative, backbone = _relative(key, legacy_names=True)
    if backbone and relative in table.IGNORED_BACKBONE_KEYS:
        return None
    if not backbone and config.tie_word_embeddings and relative in table.TIED_ALIASES:
        canonical = table.TIED_ALIASES[relative]
        if canonical in present or f"roberta.{canonical}" in present:
            return None
        relative = canonical  # an alias standing in for a missing canonical key
    found = table.match(relative, backbone)
    if found is None:
        return f"unexpected tensor {key!r} {info.shape}: no rule of the weight table matches it"
    rule, layer = found
    leaf = leaves.get(table.model_path(rule.flax, rule.backbone, hf_prefix))
    if leaf is None:
        if not backbone and relative == table.TIED_DECODER_KEY and config.tie_word_embeddings:
            return None  # the tied decoder: same tensor as the word embeddings
        return _unplaced(key, backbone, relative, config)
    if layer is not None and layer >= config.num_hidden_layers:
        return f"tensor {key!r}: layer {layer} but config num_hidden_layers={config.num_hidden_layers}"
    expected = leaf.shape[1:] if rule.stacked else leaf.shape
    got = info.shape[::-1] if rule.transform == table.TRANSPOSE else info.shape
    if tuple(got) != tuple(expected):
        shown = f"{info.shape} (transposed: {got})" if rule.transform == table.TRANSPOSE else str(info.shape)
        return (f"tensor {key!r} in {info.file}: shape {shown}, but the config expects "
                f"{tuple(expected)} for {'.'.join(leaf.path)}")
    return leaf, rule, layer


def _match_flax_key(key, info, leaves, hf_prefix, config, present):
    """Our Flax format: keys are Flax paths, tensors already stacked and transposed."""
    relative, backbone = _relative(key, legacy_names=False)
    leaf = leaves.get(table.model_path(relative, backbone, hf_prefix))
    if leaf is None:
        if table.rule_for_flax_path(relative) is None:
            return f"unexpected tensor {key!r} {info.shape}: not a parameter of any XLM-R model"
        return _unplaced(key, backbone, relative, config)
    if tuple(info.shape) != tuple(leaf.shape):
        return (f"tensor {key!r} in {info.file}: shape {info.shape}, but the config expects "
                f"{tuple(leaf.shape)} for {'.'.join(leaf.path)}")
    return leaf, table.Rule(key, relative, table.COPY, backbone), None


def _unplaced(key, backbone, relative, config):
    if (not backbone) or relative.startswith(_INITIALISABLE_BACKBONE):
        return "unused"  # another head's weights, or a pooler this model lacks
    return (f"tensor {key!r} has no place in this model: the config (model_type={config.model_type!r}, "
            f"add_cross_attention={config.add_cross_attention}) contradicts the weights")


def plan_load(abstract_state, checkpoint: Checkpoint, hf_prefix: str, config, source: str):
    """Match checkpoint keys to leaves; returns ({path: LeafPlan}, LoadReport) or raises one error."""
    leaves = {
        tuple(str(p) for p in path): LeafPlan(tuple(str(p) for p in path), var.shape, np.dtype(var.dtype))
        for path, var in nnx.to_flat_state(abstract_state)
    }
    match_key = _match_flax_key if checkpoint.format == FLAX else _match_pytorch_key
    problems: list[str] = []
    report = LoadReport()
    present = set(checkpoint.tensors)
    for key, info in sorted(checkpoint.tensors.items()):
        found = match_key(key, info, leaves, hf_prefix, config, present)
        if found is None:
            continue
        if found == "unused":
            report.unused.append(key)
        elif isinstance(found, str):
            problems.append(found)
        else:
            if not jnp.issubdtype(info.dtype, jnp.floating):
                # every parameter is a float: integer values cast to float would load as garbage
                problems.append(f"tensor {key!r} in {info.file}: dtype {info.dtype}, but its parameter "
                                "is a float")
            leaf, rule, layer = found
            leaf.rule = rule
            leaf.sources[layer] = key
    problems += _missing_leaf_problems(leaves, report, hf_prefix, config, source, checkpoint.format)
    if problems:
        raise CheckpointError(f"cannot load {source}:\n  " + "\n  ".join(problems))
    return leaves, report


def _missing_leaf_problems(leaves, report, hf_prefix, config, source, fmt) -> list[str]:
    problems = []
    for path, leaf in leaves.items():
        dotted = ".".join(path)
        if leaf.rule is not None and leaf.rule.stacked:
            missing_layers = sorted(set(range(config.num_hidden_layers)) - set(leaf.sources))
            if missing_layers:
                hf = table.hf_name(leaf.rule, hf_prefix, missing_layers[0])
                problems.append(f"missing tensor(s) for {dotted}: layers {_few(missing_layers)} "
                                f"(e.g. {hf!r})")
            continue
        if leaf.rule is not None:
            continue
        relative, in_backbone = table.split_model_path(dotted, hf_prefix)
        if in_backbone and not relative.startswith(_INITIALISABLE_BACKBONE):
            rule = table.rule_for_flax_path(relative)
            if fmt == FLAX or rule is None:
                problems.append(f"missing tensor {dotted!r} in {source}")
            else:
                problems.append(f"missing tensor {table.hf_name(rule, hf_prefix, 0)!r} (for {dotted}) in {source}")
        else:
            report.initialised.append(dotted)
    return problems


def _few(items: list) -> str:
    """A list short enough for an error message (a config may claim 200000 layers)."""
    if len(items) <= 8:
        return str(items)
    return f"[{items[0]}, {items[1]}, ..., {items[-1]}] ({len(items)} in all)"


def read_leaf_slice(checkpoint: Checkpoint, leaf: LeafPlan, index: tuple[slice, ...],
                    mapped: bool = False) -> np.ndarray:
    """The part `index` of a leaf, read from the checkpoint (only that part), cast to the leaf dtype.
    `mapped`: read through a memory map (see `SafetensorsReader.read`); the result may then be a
    read-only view of it."""
    rule = leaf.rule

    def read_one(key: str, sub: tuple[slice, ...]) -> np.ndarray:
        data = checkpoint.read(key, sub[::-1] if rule.transform == table.TRANSPOSE else sub, mapped=mapped)
        return data.T if rule.transform == table.TRANSPOSE else data  # a view; copied once below

    index = tuple(index) + (slice(None),) * (len(leaf.shape) - len(index))
    if not rule.stacked:
        return np.asarray(read_one(leaf.sources[None], index), dtype=leaf.dtype, order="C")
    layers = range(leaf.shape[0])[index[0]]
    shape = (len(layers), *(len(range(n)[s]) for n, s in zip(leaf.shape[1:], index[1:], strict=True)))
    out = np.empty(shape, leaf.dtype)
    for row, layer in enumerate(layers):
        out[row] = read_one(leaf.sources[layer], index[1:])  # transpose and cast in one copy
    return out


def materialise(
    checkpoint: Checkpoint,
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
