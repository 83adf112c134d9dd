"""The layer stack: parameters stacked on a leading `layers` axis and run by `jax.lax.scan`,
so compile time does not grow with depth (36 layers of XL compile like one). With
`config.unroll_layers` the same scan is emitted as straight-line code: faster train steps, longer
compiles (see the config field)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.modeling.cache import KVCache
from xlmr_jax.modeling.layer import XLMRobertaLayer
from xlmr_jax.modeling.layers import LayerNorm
from xlmr_jax.sharding import constrain_batch


class XLMRobertaEncoder(nnx.Module):
    def __init__(self, config: XLMRobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        num_layers = config.num_hidden_layers

        @nnx.split_rngs(splits=num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=num_layers)
        def make_layers(rngs: nnx.Rngs) -> XLMRobertaLayer:
            return XLMRobertaLayer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        self.layer = make_layers(rngs)
        if config.pre_layer_norm:
            # XL/XXL: the stack ends with a LayerNorm; the last hidden state is post-LN.
            self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps,
                                       dtype=dtype, param_dtype=param_dtype)
        self.num_layers = num_layers
        self.pre_layer_norm = config.pre_layer_norm
        self.remat = config.remat
        self.unroll_layers = config.unroll_layers

    def project_cross_key_values(self, encoder_hidden_states: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Every layer's cross-attention keys/values, stacked: (layers, batch, length, heads, dim)."""
        graphdef, state = nnx.split(self.layer)

        def one_layer(layer_state):
            return nnx.merge(graphdef, layer_state).project_cross_key_value(encoder_hidden_states)

        return jax.lax.map(one_layer, state)

    def __call__(
        self,
        hidden_states: jax.Array,
        mask: jax.Array | None,
        *,
        encoder_hidden_states: jax.Array | None = None,
        encoder_mask: jax.Array | None = None,
        cache: KVCache | None = None,
        dropout_rng: jax.Array | None = None,
        deterministic: bool = True,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        """Returns (last hidden state, per-layer outputs or None, self-attention weights or None,
        cross-attention weights or None, updated cache or None); per-layer values are stacked."""
        graphdef, state = nnx.split(self.layer)
        layer_rngs = None if dropout_rng is None else jax.random.split(dropout_rng, self.num_layers)
        # The self-attention cache rides in the scan's carry, not in its inputs/outputs: each layer
        # writes only the new positions into the one stacked buffer (updated in place), where
        # stacked outputs would rebuild, i.e. copy, the whole cache at every decoding step.
        cache_kv = None if cache is None else (cache.key, cache.value)
        layer_index = None if cache is None else jnp.arange(self.num_layers, dtype=jnp.int32)
        cross_kv = None if cache is None or cache.cross_key is None else (cache.cross_key, cache.cross_value)
        cache_index = None if cache is None else cache.index

        def run_layer(carry, xs):
            h, kv = carry
            layer_state, rng, index, layer_cross_kv = xs
            layer = nnx.merge(graphdef, layer_state)
            h = constrain_batch(h)
            h, self_w, cross_w, kv = layer(
                h, mask, encoder_hidden_states=encoder_hidden_states, encoder_mask=encoder_mask,
                cross_key_value=layer_cross_kv, cache=kv, cache_layer=index, cache_index=cache_index,
                dropout_rng=rng, deterministic=deterministic, output_attentions=output_attentions,
            )
            return (h, kv), (h if output_hidden_states else None, self_w, cross_w)

        if self.remat:
            # Inside a scan loop XLA cannot merge the recomputation with the forward pass; unrolled
            # it could, so there the checkpoint must guard against that itself.
            run_layer = jax.checkpoint(run_layer, prevent_cse=self.unroll_layers)
        (hidden_states, new_kv), (per_layer, self_w, cross_w) = jax.lax.scan(
            run_layer, (hidden_states, cache_kv), (state, layer_rngs, layer_index, cross_kv),
            unroll=self.unroll_layers,  # True: every layer as straight-line code (config.unroll_layers)
        )
        if self.pre_layer_norm:
            hidden_states = self.LayerNorm(hidden_states)
        hidden_states = constrain_batch(hidden_states)
        new_cache = None
        if cache is not None:
            new_cache = cache.replace(key=new_kv[0], value=new_kv[1], index=cache.index + hidden_states.shape[1])
        return hidden_states, per_layer, self_w, cross_w, new_cache
