"""A jitted forward that takes the parameters as an argument.

`nnx.jit(lambda m, ...: m(...))` (flax 0.12) hands the module's whole state back out of the
compiled function on every call, so each call copies every parameter (1.1 GB for base; the
forward ran at 0.66x instead of 0.89x of transformers on CPU, benchmarks/results/encoder_forward.md).
Splitting once and jitting a pure function of (state, inputs) returns only the outputs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx

from xlmr_jax.modeling import validation
from xlmr_jax.sharding import activation_mesh, constrain_batch


def jit_forward(model, *, mesh=None, **call_options) -> Callable:
    """`forward(*args, **kwargs)` = `model(*args, **kwargs, **call_options)`, jitted.

    `call_options` are fixed at compile time (e.g. `output_hidden_states=True`,
    `deterministic=False`); array arguments (ids, masks, labels, `dropout_rng`) are traced, so
    each new input shape compiles once. With `mesh`, batch-first inputs are split over the mesh's
    `data` x `fsdp` axes and batch-first outputs come back split the same way. The model's
    parameters are read when the function is made: after training, make a new one.
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def pure_forward(state, args, kwargs):
        out = nnx.merge(graphdef, state)(*args, **kwargs, **call_options)
        if mesh is None:
            return out
        batch = _batch_size(args, kwargs)
        # batch-first outputs come back split like the inputs (not e.g. a cache's layer axis)
        return jax.tree.map(lambda x: constrain_batch(x) if _is_batch_first(x, batch) else x, out)

    signature = inspect.signature(model.__call__)
    # Python switches of the call (output_hidden_states, deterministic, ...) choose the program:
    # under jit they would be traced and fail deep inside; they belong to jit_forward itself.
    switches = {name for name, p in signature.parameters.items() if isinstance(p.default, bool)}

    def forward(*args, **kwargs):
        fixed = sorted(switches & kwargs.keys())
        if fixed:
            given = ", ".join(f"{name}={kwargs[name]!r}" for name in fixed)
            raise TypeError(f"jit_forward: {', '.join(fixed)} choose(s) the compiled program; fix them when "
                            f"making the function: jit_forward(model, {given})")
        _check_host_ids(signature, args, kwargs)
        if mesh is not None:
            args, kwargs = _place_batch((args, kwargs), mesh)
        with activation_mesh(mesh):  # JAX's mesh context: traced (and cached) per mesh
            return pure_forward(state, args, kwargs)

    return forward


def _check_host_ids(signature: inspect.Signature, args, kwargs) -> None:
    """Host integer arrays are checked before jit casts them to 32 bits (where they would wrap)."""
    try:
        named = signature.bind_partial(*args, **kwargs).arguments
    except TypeError:  # the call itself will say what is wrong
        return
    for name, value in named.items():
        validation.check_host_ids(name, value)


def _batch_size(args, kwargs) -> int | None:
    ids = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
    return None if ids is None else ids.shape[0]


def _is_batch_first(x, batch: int | None) -> bool:
    return batch is not None and getattr(x, "ndim", 0) >= 1 and x.shape[0] == batch


def _place_batch(tree, mesh):
    from xlmr_jax.sharding import shard_batch

    def place(x):
        is_array = isinstance(x, np.ndarray | jax.Array) and x.ndim >= 1
        if not is_array or jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        return shard_batch(x, mesh)

    return jax.tree.map(place, tree)
