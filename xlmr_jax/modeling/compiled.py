"""Eager calls that reuse compiled code.

A model called outside any JAX transformation runs its (already validated) forward through one
jitted function per (model structure, call options), with the module's arrays passed as
arguments and only the outputs returned: a second call with the same input shapes compiles
nothing and copies no parameter. Inside a transformation (jit, grad, vmap, `nnx.value_and_grad`,
where the inputs or the parameters are tracers) the forward is traced inline as plain code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax

# Compiled entries held at once (each keeps its own executables per input shape); the least
# recently used one is dropped, so a process that builds many differently shaped models does
# not keep every program it ever compiled.
MAX_CACHED_PROGRAMS = 64


def run(module: Any, method: Callable, inputs: Mapping[str, Any], options: Mapping[str, Hashable]) -> Any:
    """`method(module, **inputs, **options)`: jitted and cached when nothing is traced.

    `inputs` are arrays, array pytrees or None (traced arguments); `options` are hashable Python
    values that change the program (`output_attentions`, `deterministic`, ...)."""
    leaves, treedef = jax.tree_util.tree_flatten((module, dict(inputs)))
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return method(module, **inputs, **options)
    return _compiled(treedef, method, tuple(sorted(options.items())))(leaves)


@functools.lru_cache(maxsize=MAX_CACHED_PROGRAMS)
def _compiled(treedef, method: Callable, options: tuple[tuple[str, Hashable], ...]) -> Callable:
    # The key holds the module's structure and static attributes (its config), never its arrays.
    def call(leaves):
        module, inputs = jax.tree_util.tree_unflatten(treedef, leaves)
        return method(module, **inputs, **dict(options))

    call.__name__ = call.__qualname__ = method.__qualname__  # compile logs name the model's method
    return jax.jit(call)


def clear_cache() -> None:
    """Drop every compiled program (they are rebuilt on the next call)."""
    _compiled.cache_clear()
