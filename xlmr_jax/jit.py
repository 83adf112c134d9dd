"""A jitted forward that takes the parameters as an argument.

`nnx.jit(lambda m, ...: m(...))` (flax 0.12) hands the module's whole state back out of the
compiled function on every call, so each call copies every parameter (1.1 GB for base; measured
at a third of the forward time on CPU, benchmarks/results/encoder_forward.md). Splitting once and
jitting a pure function of (state, inputs) returns only the outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx


def jit_forward(model, **call_options) -> Callable:
    """`forward(*args, **kwargs)` = `model(*args, **kwargs, **call_options)`, jitted.

    `call_options` are fixed at compile time (e.g. `output_hidden_states=True`,
    `deterministic=False`); array arguments (ids, masks, labels, `dropout_rng`) are traced, so
    each new input shape compiles once. The model's parameters are read when the function is
    made: after training, make a new one (or call `jit_forward(model)` again).
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def pure_forward(state, args, kwargs):
        return nnx.merge(graphdef, state)(*args, **kwargs, **call_options)

    def forward(*args, **kwargs):
        return pure_forward(state, args, kwargs)

    return forward
