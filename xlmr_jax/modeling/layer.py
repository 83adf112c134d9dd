"""One transformer layer: post-LN (base/large) or pre-LN (XL/XXL), optional cross-attention."""

from __future__ import annotations

import jax
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.modeling.attention import XLMRobertaAttention
from xlmr_jax.modeling.chunking import chunked_feed_forward, feed_forward_chunks
from xlmr_jax.modeling.layers import LayerNorm, activation, dense, dropout, fold_key


class XLMRobertaIntermediate(nnx.Module):
    def __init__(self, config: XLMRobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.dense = dense(config.hidden_size, config.intermediate_size, config,
                           dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.act = activation(config.hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.act(self.dense(x))


class XLMRobertaOutput(nnx.Module):
    """FFN down-projection + residual. Post-LN: dropout, then LayerNorm(x + residual).
    Pre-LN (the reference's XL class): plain residual add, no dropout."""

    def __init__(self, config: XLMRobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.dense = dense(config.intermediate_size, config.hidden_size, config,
                           dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if not config.pre_layer_norm:
            self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps,
                                       dtype=dtype, param_dtype=param_dtype)
        self.pre_layer_norm = config.pre_layer_norm
        self.dropout_rate = config.hidden_dropout_prob

    def __call__(self, x, residual, *, dropout_rng, deterministic):
        x = self.dense(x)
        if self.pre_layer_norm:
            return x + residual
        return self.LayerNorm(dropout(x, self.dropout_rate, dropout_rng, deterministic) + residual)


class XLMRobertaLayer(nnx.Module):
    def __init__(self, config: XLMRobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attention = XLMRobertaAttention(config, **kw)
        if config.add_cross_attention:
            self.crossattention = XLMRobertaAttention(config, **kw)
        self.intermediate = XLMRobertaIntermediate(config, **kw)
        self.output = XLMRobertaOutput(config, **kw)
        if config.pre_layer_norm:
            self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps,
                                       dtype=dtype, param_dtype=param_dtype)
        self.pre_layer_norm = config.pre_layer_norm
        self.has_cross_attention = config.add_cross_attention
        self.ffn_chunk_tokens = config.ffn_chunk_tokens

    def project_cross_key_value(self, encoder_hidden_states: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Cross-attention keys/values of the encoder states, computed once for a decoding cache."""
        return self.crossattention.self.project_key_value(encoder_hidden_states)

    def __call__(
        self,
        hidden_states: jax.Array,
        mask: jax.Array | None,
        *,
        encoder_hidden_states: jax.Array | None,
        encoder_mask: jax.Array | None,
        cross_key_value: tuple[jax.Array, jax.Array] | None,
        cache: tuple[jax.Array, jax.Array] | None,
        cache_layer: jax.Array | None,
        cache_index: jax.Array | None,
        dropout_rng: jax.Array | None,
        deterministic: bool,
        output_attentions: bool,
    ):
        """Returns (hidden, self-attention weights, cross-attention weights, updated cache).

        `cache` holds every layer's keys/values stacked; this layer writes into `cache_layer`."""
        common = dict(deterministic=deterministic, output_attentions=output_attentions)
        x, self_weights, new_cache = self.attention(
            hidden_states, mask, cache=cache, cache_layer=cache_layer, cache_index=cache_index,
            dropout_rng=fold_key(dropout_rng, 0), **common,
        )
        cross_weights = None
        if encoder_hidden_states is not None or cross_key_value is not None:
            x, cross_weights, _ = self.crossattention(
                x, encoder_mask, key_value_states=encoder_hidden_states,
                precomputed_key_value=cross_key_value, dropout_rng=fold_key(dropout_rng, 1), **common,
            )
        ffn_input = self.LayerNorm(x) if self.pre_layer_norm else x

        def feed_forward(ffn_input, residual, rng):
            return self.output(self.intermediate(ffn_input), residual, dropout_rng=rng, deterministic=deterministic)

        chunks = feed_forward_chunks(*x.shape[:2], self.ffn_chunk_tokens, deterministic=deterministic)
        out = chunked_feed_forward(feed_forward, ffn_input, x, chunks=chunks, dropout_rng=fold_key(dropout_rng, 2))
        return out, self_weights, cross_weights, new_cache
