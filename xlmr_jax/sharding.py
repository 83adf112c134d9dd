"""Device meshes and where every parameter lives on them.

Every parameter gets logical axis names from one table (`logical_axes`): ('vocab', 'embed') for
the word embeddings, ('layers', 'embed', 'heads') for a stacked query kernel, and so on. A rules
table per strategy turns logical names into mesh axes, so switching data parallel, FSDP, tensor
parallel or FSDP+TP is a change of table, not of code:

    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    model = XLMRobertaForMaskedLM.from_pretrained(path, mesh=mesh, rules="fsdp_tp")

Mesh axes: `data` (batch only), `fsdp` (batch, and parameters along `embed`), `tensor`
(attention heads, FFN width, vocabulary).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xlmr_jax.weights import table

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension of inputs and activations

# Logical axis -> mesh axis (None: replicated), one table per strategy.
RULES: dict[str, dict[str, str | None]] = {
    "dp": {},
    "fsdp": {"embed": "fsdp"},
    "tp": {"heads": "tensor", "mlp": "tensor", "vocab": "tensor"},
    "fsdp_tp": {"embed": "fsdp", "heads": "tensor", "mlp": "tensor", "vocab": "tensor"},
}

# Logical axes by parameter path (relative to the `roberta.` prefix, without the layer axis).
_LOGICAL_AXES: list[tuple[str, tuple[str | None, ...]]] = [
    (r"embeddings\.word_embeddings\.embedding", ("vocab", "embed")),
    (r"embeddings\.(position|token_type)_embeddings\.embedding", (None, "embed")),
    (r".*(LayerNorm|layer_norm)\.(scale|bias)", (None,)),
    (r".*attention\.self\.(query|key|value)\.kernel", ("embed", "heads")),
    (r".*attention\.self\.(query|key|value)\.bias", ("heads",)),
    (r".*attention\.output\.dense\.kernel", ("heads", "embed")),
    (r".*attention\.output\.dense\.bias", ("embed",)),
    (r"encoder\.layer\.intermediate\.dense\.kernel", ("embed", "mlp")),
    (r"encoder\.layer\.intermediate\.dense\.bias", ("mlp",)),
    (r"encoder\.layer\.output\.dense\.kernel", ("mlp", "embed")),
    (r"encoder\.layer\.output\.dense\.bias", ("embed",)),
    (r"lm_head\.decoder\.kernel", ("embed", "vocab")),
    (r"lm_head\.(decoder\.)?bias", ("vocab",)),
    # small square or narrow head matrices: split their input dimension only
    ((r"(pooler|lm_head|classifier)\.dense\.kernel|classifier\.out_proj\.kernel|classifier\.kernel"
      r"|qa_outputs\.kernel"), ("embed", None)),
    (r"(pooler|lm_head|classifier)\.dense\.bias|classifier\.out_proj\.bias|classifier\.bias|qa_outputs\.bias",
     (None,)),
]
_LOGICAL_PATTERNS = [(re.compile(pattern + r"$"), axes) for pattern, axes in _LOGICAL_AXES]
_STACKED_PREFIX = "encoder.layer."


def make_mesh(spec: str | Mapping[str, int] = "auto", devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh from "data=2,fsdp=2,tensor=2" (missing axes have size 1), a dict,
    or "auto" (every device on `data`). The product must equal the number of devices."""
    devices = list(devices if devices is not None else jax.devices())
    if isinstance(spec, str):
        spec = {"data": len(devices)} if spec.strip() == "auto" else _parse_spec(spec)
    unknown = set(spec) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh spec: unknown axis {sorted(unknown)}; the axes are {MESH_AXES}")
    sizes = tuple(int(spec.get(axis, 1)) for axis in MESH_AXES)
    if any(size < 1 for size in sizes):
        raise ValueError(f"mesh spec {dict(zip(MESH_AXES, sizes, strict=True))}: sizes must be >= 1")
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh spec {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} devices, "
            f"but {len(devices)} are present"
        )
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def _parse_spec(spec: str) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        if not value.strip().isdigit():
            raise ValueError(f"mesh spec {spec!r}: expected entries like 'data=2', got {part!r}")
        out[name.strip()] = int(value)
    return out


def resolve_rules(rules: str | Mapping[str, str | None] | None) -> dict[str, str | None]:
    if rules is None:
        return dict(RULES["fsdp"])
    if isinstance(rules, str):
        if rules not in RULES:
            raise ValueError(f"rules={rules!r}: expected one of {sorted(RULES)} or a dict logical -> mesh axis")
        return dict(RULES[rules])
    return dict(rules)


def logical_axes(path: tuple[str, ...], ndim: int) -> tuple[str | None, ...]:
    """Logical axis names of a parameter from its path (stacked layers get a leading 'layers')."""
    dotted = ".".join(path)
    relative = table.split_model_path(dotted, "roberta")[0]  # task models' backbone; the bare model has none
    for pattern, axes in _LOGICAL_PATTERNS:
        if pattern.match(relative):
            full = (("layers",) + axes) if relative.startswith(_STACKED_PREFIX) else axes
            if len(full) != ndim:
                break
            return full
    raise ValueError(f"no logical axes for parameter {dotted} (rank {ndim}); add it to sharding._LOGICAL_AXES")


def partition_spec(path: tuple[str, ...], shape: tuple[int, ...], mesh_shape: Mapping[str, int],
                   rules: Mapping[str, str | None]) -> PartitionSpec:
    """The PartitionSpec of one parameter on a mesh of `mesh_shape` ({axis: size}); an axis that does
    not divide its dimension is an error naming the parameter and the dimension."""
    axes = logical_axes(path, len(shape))
    spec = []
    for dim, (size, name) in enumerate(zip(shape, axes, strict=True)):
        mesh_axis = rules.get(name) if name is not None else None
        ways = mesh_shape.get(mesh_axis, 1) if mesh_axis is not None else 1
        if ways > 1 and size % ways:
            raise ValueError(
                f"parameter {'.'.join(path)}: dimension {dim} ({name}, size {size}) is not divisible by "
                f"mesh axis '{mesh_axis}' of size {ways}; choose another mesh or rules that leave "
                f"'{name}' unsharded, e.g. rules={{**RULES['fsdp_tp'], '{name}': None}}"
            )
        spec.append(mesh_axis if ways > 1 else None)
    return PartitionSpec(*spec)


def param_sharding(path: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh,
                   rules: Mapping[str, str | None]) -> NamedSharding:
    return NamedSharding(mesh, partition_spec(path, shape, mesh.shape, rules))


def param_bytes_per_device(model_cls, config, mesh_shape: Mapping[str, int], rules,
                           bytes_per_param: int = 4, quantization: str | None = None) -> int:
    """Parameter bytes one device holds under `rules` on a mesh of `mesh_shape`, computed from an
    abstract model (nothing is allocated). Multiply `bytes_per_param` for optimizer state, e.g.
    16 for fp32 params + grads + Adam's two moments. With `quantization` ("int8", "int4", "nf4"),
    every matmul kernel is counted in its stored fields, each sharded as `from_pretrained(...,
    quantization=..., mesh=...)` places it (like its kernel, but whole along a dimension the mesh
    axis does not divide); the other parameters count `bytes_per_param` each."""
    from flax import nnx

    rules = resolve_rules(rules)
    abstract = nnx.eval_shape(lambda: model_cls(config, rngs=nnx.Rngs(0)))
    total = 0
    for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        path, shape = tuple(str(p) for p in path), tuple(var.shape)
        spec = partition_spec(path, shape, mesh_shape, rules)
        if quantization is not None and path[-1] == "kernel":
            total += _quantized_kernel_bytes(quantization, shape, spec, mesh_shape)
            continue
        ways = math.prod(mesh_shape.get(axis, 1) for axis in spec if axis is not None)
        total += math.prod(shape) // ways * bytes_per_param
    return total


def _quantized_kernel_bytes(quantization: str, shape: tuple[int, ...], spec: PartitionSpec,
                            mesh_shape: Mapping[str, int]) -> int:
    """One device's bytes of a (..., in, out) kernel's quantised fields (the rule of
    `quantization.linear.field_sharding`)."""
    from xlmr_jax.quantization import resolve_scheme
    from xlmr_jax.quantization.arrays import field_shapes

    lead, axes = shape[:-2], tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))
    total = 0
    for field_shape, dtype in field_shapes(resolve_scheme(quantization), *shape[-2:]).values():
        full = (*lead, *field_shape)
        held = 1
        for size, axis in zip(full, axes, strict=True):
            ways = mesh_shape.get(axis, 1) if axis is not None else 1
            held *= size // ways if size % ways == 0 else size
        total += held * np.dtype(dtype).itemsize
    return total


def state_shardings(state, mesh: Mesh, rules) -> dict[tuple[str, ...], NamedSharding]:
    """{path: NamedSharding} for every leaf of an NNX state (abstract or concrete)."""
    from flax import nnx

    rules = resolve_rules(rules)
    return {
        tuple(str(p) for p in path): param_sharding(tuple(str(p) for p in path), tuple(var.shape), mesh, rules)
        for path, var in nnx.to_flat_state(state)
    }


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Inputs (batch, ...) split over `data` x `fsdp` on the batch axis."""
    axes = tuple(a for a in BATCH_AXES if mesh.shape[a] > 1)
    return NamedSharding(mesh, PartitionSpec(axes or None, *([None] * (ndim - 1))))


def shard_batch(batch, mesh: Mesh):
    """Place a batch (array or pytree of arrays, batch first) on the mesh. On several hosts each
    process passes its own rows, and the global batch is assembled from all of them."""
    def place(x):
        x = np.asarray(x)
        sharding = batch_sharding(mesh, x.ndim)
        if jax.process_count() > 1:
            return jax.make_array_from_process_local_data(sharding, x)
        if x.shape[0] % _batch_ways(mesh):
            raise ValueError(f"batch size {x.shape[0]} is not divisible by the {_batch_ways(mesh)} data x fsdp "
                             "shards of the mesh")
        return jax.device_put(x, sharding)

    return jax.tree.map(place, batch)


def _batch_ways(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def describe(model_or_state) -> str:
    """One line per parameter: path, shape, dtype, PartitionSpec (where every param lives)."""
    from flax import nnx

    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state, nnx.Param)
    lines = []
    for path, var in nnx.to_flat_state(state):
        value = var[...]
        spec = getattr(getattr(value, "sharding", None), "spec", "unsharded")
        lines.append(f"{'.'.join(str(p) for p in path):<70} {value.shape!s:<22} {value.dtype!s:<9} {spec}")
    return "\n".join(lines)


# -- activations -------------------------------------------------------------------------------
# The model pins its main activations to the mesh of JAX's own mesh context (`jax.set_mesh`), which
# jit's cache keys on: a function traced under one mesh is never reused under another, or without.


def activation_mesh(mesh: Mesh | None):
    """Calls made inside this context (and the functions they trace) pin the model's main
    activations to `mesh`; `None`: no constraints. Enter it around a jitted call, not inside."""
    return contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh)


def mesh_of(tree) -> Mesh | None:
    """The mesh the arrays of `tree` are sharded over, if any."""
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding):
            return sharding.mesh
    return None


def _batch_mesh():
    """The current mesh context if it is one of ours (it has the batch axes), else None."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names) else mesh


def batch_shards() -> int:
    """How many ways the batch is split under the current mesh context (1 without one): what
    each device holds of a batch is its size divided by this."""
    mesh = _batch_mesh()
    return 1 if mesh is None else _batch_ways(mesh)


def constrain_batch(x: jax.Array) -> jax.Array:
    """Pin an activation (batch, ...) to be split on the batch axis over `data` x `fsdp` (logical
    axes ('batch', 'length', 'embed'): only 'batch' is sharded), so that FSDP gathers weights to
    the batch rather than letting the compiler spread activations some other way. Only under a
    mesh context of ours whose axes the compiler places (Explicit axes carry shardings in types)."""
    mesh = _batch_mesh()
    if (mesh is None or any(t != jax.sharding.AxisType.Auto for t in mesh.axis_types)
            or x.ndim == 0 or x.shape[0] % _batch_ways(mesh)):
        return x
    axes = tuple(a for a in BATCH_AXES if mesh.shape[a] > 1)
    return jax.lax.with_sharding_constraint(x, PartitionSpec(axes or None, *([None] * (x.ndim - 1))))
