"""Small building blocks shared by every module: dense layers, LayerNorm, embeddings, dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig


@jax.custom_vjp
def exact_gelu(x: jax.Array) -> jax.Array:
    """GELU in the reference's exact erf form (jax.nn.gelu defaults to the tanh approximation).

    Its gradient is written out so that the backward pass keeps only `x`: differentiated as is,
    the erfc inside jax.nn.gelu leaves three more (batch, length, 3072) arrays per layer for the
    backward pass (its intermediate exp and quotients), which the layer scan then stacks and
    copies back out (measured with the profiler on the base train step). The derivative,
    Phi(x) + x phi(x), is exact and computed in float32."""
    return jax.nn.gelu(x, approximate=False)


def _exact_gelu_forward(x):
    return jax.nn.gelu(x, approximate=False), x


def _exact_gelu_backward(x, grad):
    x32 = jnp.asarray(x, jnp.float32)
    cdf = 0.5 * jax.lax.erfc(x32 * np.float32(-1 / np.sqrt(2)))  # Phi(x)
    pdf = jnp.exp(-0.5 * x32 * x32) * np.float32(1 / np.sqrt(2 * np.pi))  # phi(x)
    return ((jnp.asarray(grad, jnp.float32) * (cdf + x32 * pdf)).astype(jnp.result_type(grad)),)


exact_gelu.defvjp(_exact_gelu_forward, _exact_gelu_backward)

_ACTIVATIONS = {
    "gelu": exact_gelu,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str):
    return _ACTIVATIONS[name]


def dense(
    in_features: int,
    out_features: int,
    config: XLMRobertaConfig,
    *,
    dtype: jnp.dtype,
    param_dtype: jnp.dtype,
    rngs: nnx.Rngs,
    use_bias: bool = True,
) -> nnx.Linear:
    """A Linear initialised like the reference (normal(initializer_range), zero bias)."""
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nnx.initializers.normal(config.initializer_range),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


class LayerNorm(nnx.Module):
    """LayerNorm computed in float32 whatever the compute dtype, returned in the compute dtype."""

    def __init__(self, features: int, eps: float, *, dtype: jnp.dtype, param_dtype: jnp.dtype):
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((features,), param_dtype))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = jnp.asarray(x, jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        centred = x32 - mean
        var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        y = centred * jax.lax.rsqrt(var + self.eps)
        y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(self.dtype)


class Embedding(nnx.Module):
    """A lookup table whose param is named `embedding` (the Flax convention)."""

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        config: XLMRobertaConfig,
        *,
        dtype: jnp.dtype,
        param_dtype: jnp.dtype,
        rngs: nnx.Rngs,
        padding_idx: int | None = None,
    ):
        table = nnx.initializers.normal(config.initializer_range)(
            rngs.params(), (num_embeddings, features), param_dtype
        )
        if padding_idx is not None and padding_idx < num_embeddings:
            # nn.Embedding(padding_idx=...) in the reference starts that row at zero.
            table = table.at[padding_idx].set(0)
        self.embedding = nnx.Param(table)
        self.num_embeddings = num_embeddings
        self.padding_idx = padding_idx
        self.dtype = dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        # Under jit ids cannot be range-checked on the host; an id outside the table (negative
        # ones included) gives NaN rows instead of XLA's silent clamp, so a bad id is never a
        # plausible-looking answer.
        ids = jnp.where(ids < 0, self.num_embeddings, ids)
        table = self.embedding[...].astype(self.dtype)
        rows = jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)
        if self.padding_idx is not None:
            # As torch's padding_idx: lookups of the pad row pass no gradient to it.
            rows = jnp.where((ids == self.padding_idx)[..., None], jax.lax.stop_gradient(rows), rows)
        return rows


# Dropout decides keep-or-drop from 16 random bits per element: each 32-bit draw serves two elements
# (jax.random's threefry spends a whole block on every 32-bit draw, and on the base train step those
# draws were ~0.5 s of a 15 s step, run beside the forward's matmuls). The keep probability is therefore
# a multiple of 2^-16 (rate 0.1 keeps 58982/65536 = 0.8999939 of the entries), and what is kept is scaled
# by the inverse of that realised probability, so the expectation is exactly the input's.
DROPOUT_MASK_BITS = 16


def _keep_threshold(rate: float) -> int:
    """How many of the 2^16 values of a draw keep an entry: 1 - rate rounded, at least one (so a
    rate just below 1 still keeps something and the scale stays finite)."""
    return max(1, round((1.0 - rate) * (1 << DROPOUT_MASK_BITS)))


def dropout_keep_probability(rate: float) -> float:
    """The probability of keeping an entry that `dropout(x, rate, ...)` realises: 1 - rate rounded to
    a multiple of 2^-16."""
    return _keep_threshold(rate) / (1 << DROPOUT_MASK_BITS)


def dropout_keep_mask(rng: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """Boolean keep mask of `shape`, True with probability `dropout_keep_probability(rate)`.
    One uint32 draw gives two entries of the last axis: its low half the first half of the axis,
    its high half the second (a split of the last axis keeps a sharded batch sharded)."""
    threshold = jnp.uint32(_keep_threshold(rate))
    low_half = jnp.uint32((1 << DROPOUT_MASK_BITS) - 1)
    *lead, last = shape
    bits = jax.random.bits(rng, (*lead, (last + 1) // 2), jnp.uint32)
    keep = jnp.concatenate([(bits & low_half) < threshold, (bits >> DROPOUT_MASK_BITS) < threshold], axis=-1)
    return keep[..., :last]


def dropout(x: jax.Array, rate: float, rng: jax.Array | None, deterministic: bool) -> jax.Array:
    """Inverted dropout; a no-op unless `deterministic` is False and the rate is positive.

    Two optimization barriers shape what XLA keeps for the backward pass. The keep mask is
    materialised as booleans (1 byte an entry); without the barrier XLA kept threefry's two uint32
    words per entry and recomputed the comparison wherever the mask was used. And the barrier on
    `x` becomes, in the gradient, a barrier on the masked and scaled cotangent (an optimization
    barrier's transpose is one), so that cotangent is written once, in order; without it XLA folded
    the select and the scale into the transposing copy that feeds the weight-gradient matmul, a
    strided pass over three arrays (profiled on the base train step at 32 x 128: 24 ms a site and
    0.57 s a step before, 8 ms and 0.20 s after). Forward-mode differentiation works as before.
    """
    if deterministic or rate == 0.0:
        return x
    if rng is None:
        raise ValueError("deterministic=False needs dropout_rng=jax.random.key(...) for dropout")
    if x.ndim == 0:
        return dropout(x[None], rate, rng, deterministic)[0]
    keep = jax.lax.optimization_barrier(dropout_keep_mask(rng, rate, x.shape))
    return jnp.where(keep, jax.lax.optimization_barrier(x) / dropout_keep_probability(rate), jnp.zeros_like(x))


def fold_key(rng: jax.Array | None, tag: int) -> jax.Array | None:
    """A distinct key for each dropout site, or None when dropout is off."""
    return None if rng is None else jax.random.fold_in(rng, tag)
