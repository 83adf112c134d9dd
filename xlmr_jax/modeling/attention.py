"""Multi-head attention (self and cross), masks, and the explicit path that returns weights."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.modeling.cache import update_layer
from xlmr_jax.modeling.layers import LayerNorm, dense, dropout, fold_key


def padding_mask(attention_mask: jax.Array) -> jax.Array:
    """(batch, keys) 0/1 -> boolean (batch, 1, 1, keys), broadcast over heads and queries."""
    return attention_mask.astype(bool)[:, None, None, :]


def causal_mask(query_length: int, key_length: int, query_offset: jax.Array | int = 0) -> jax.Array:
    """Boolean (1, 1, queries, keys): query i (at absolute position offset+i) sees keys <= it."""
    query_pos = jnp.arange(query_length)[:, None] + query_offset
    key_pos = jnp.arange(key_length)[None, :]
    return (key_pos <= query_pos)[None, None]


def scaled_dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: jax.Array | None,
    *,
    dropout_rate: float,
    dropout_rng: jax.Array | None,
    deterministic: bool,
    return_weights: bool,
) -> tuple[jax.Array, jax.Array | None]:
    """Attention over (batch, length, heads, head_dim) inputs.

    The fused `jax.nn.dot_product_attention` (cuDNN on GPU) serves the common case; the explicit
    einsum path runs only when the weights are asked for or attention dropout is active, since
    the fused kernel offers neither.
    """
    scale = 1.0 / math.sqrt(query.shape[-1])
    needs_dropout = not deterministic and dropout_rate > 0.0
    if not return_weights and not needs_dropout:
        return jax.nn.dot_product_attention(query, key, value, mask=mask, scale=scale), None
    # QK^T accumulated in float32 (as the fused path does): under bf16 a product rounded to bf16
    # first moves the logits by several bf16 steps.
    scores = jnp.einsum("btnd,bsnd->bnts", query, key, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1)  # softmax in float32 under any compute dtype
    weights = dropout(weights, dropout_rate, dropout_rng, deterministic)
    context = jnp.einsum("bnts,bsnd->btnd", weights.astype(value.dtype), value)
    return context, weights


class XLMRobertaSelfAttention(nnx.Module):
    """Q/K/V projections (reference name `attention.self`; also the cross-attention's `self`)."""

    def __init__(self, config: XLMRobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h = config.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.query = dense(h, h, config, **kw)
        self.key = dense(h, h, config, **kw)
        self.value = dense(h, h, config, **kw)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.dropout_rate = config.attention_probs_dropout_prob

    def split_heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)

    def project_key_value(self, states: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.split_heads(self.key(states)), self.split_heads(self.value(states))

    def __call__(
        self,
        hidden_states: jax.Array,
        key_value: tuple[jax.Array, jax.Array],
        mask: jax.Array | None,
        *,
        dropout_rng: jax.Array | None,
        deterministic: bool,
        output_attentions: bool,
    ) -> tuple[jax.Array, jax.Array | None]:
        """Queries from `hidden_states` attend over `key_value` (already split into heads)."""
        query = self.split_heads(self.query(hidden_states))
        context, weights = scaled_dot_product_attention(
            query, *key_value, mask,
            dropout_rate=self.dropout_rate, dropout_rng=dropout_rng,
            deterministic=deterministic, return_weights=output_attentions,
        )
        return context.reshape(*context.shape[:-2], -1), weights


class XLMRobertaSelfOutput(nnx.Module):
    """Output projection + residual; post-LN adds a LayerNorm after the residual."""

    def __init__(self, config: XLMRobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h = config.hidden_size
        self.dense = dense(h, h, config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if not config.pre_layer_norm:
            self.LayerNorm = LayerNorm(h, config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.pre_layer_norm = config.pre_layer_norm
        self.dropout_rate = config.hidden_dropout_prob

    def __call__(self, x, residual, *, dropout_rng, deterministic):
        x = dropout(self.dense(x), self.dropout_rate, dropout_rng, deterministic)
        if self.pre_layer_norm:
            return x + residual
        return self.LayerNorm(x + residual)


class XLMRobertaAttention(nnx.Module):
    """`attention` / `crossattention` of a layer: [pre-LN] -> attention -> output (+ residual)."""

    def __init__(self, config: XLMRobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if config.pre_layer_norm:
            self.self_attn_layer_norm = LayerNorm(
                config.hidden_size, config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype
            )
        self.self = XLMRobertaSelfAttention(config, **kw)
        self.output = XLMRobertaSelfOutput(config, **kw)
        self.pre_layer_norm = config.pre_layer_norm

    def normalise_input(self, hidden_states: jax.Array) -> jax.Array:
        return self.self_attn_layer_norm(hidden_states) if self.pre_layer_norm else hidden_states

    def __call__(
        self,
        hidden_states: jax.Array,
        mask: jax.Array | None,
        *,
        key_value_states: jax.Array | None = None,
        precomputed_key_value: tuple[jax.Array, jax.Array] | None = None,
        cache: tuple[jax.Array, jax.Array] | None = None,
        cache_layer: jax.Array | None = None,
        cache_index: jax.Array | None = None,
        dropout_rng: jax.Array | None,
        deterministic: bool,
        output_attentions: bool,
    ) -> tuple[jax.Array, jax.Array | None, tuple[jax.Array, jax.Array] | None]:
        """Returns (output, attention weights or None, updated (key, value) cache or None).

        Keys/values come from, in order: `precomputed_key_value` (cross-attention of a cached
        decoder), `key_value_states` (cross-attention: the encoder states), else the (normalised)
        input itself. With `cache` (every layer's keys/values, stacked), the new keys/values are
        written into layer `cache_layer` at `cache_index` and the queries attend over that layer's
        whole cache (the mask hides what is not filled yet).
        """
        x = self.normalise_input(hidden_states)
        if precomputed_key_value is not None:
            key, value = precomputed_key_value
        else:
            key, value = self.self.project_key_value(x if key_value_states is None else key_value_states)
        new_cache = None
        if cache is not None:
            (key, value), new_cache = update_layer(cache, cache_layer, cache_index, key, value)
        context, weights = self.self(
            x, (key, value), mask,
            dropout_rng=fold_key(dropout_rng, 0), deterministic=deterministic,
            output_attentions=output_attentions,
        )
        out = self.output(context, hidden_states, dropout_rng=fold_key(dropout_rng, 1),
                          deterministic=deterministic)
        return out, weights, new_cache
