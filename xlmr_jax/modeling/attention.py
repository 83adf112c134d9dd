"""Multi-head attention (self and cross); masks that say what the fused kernels need to know of them
(right padding, causal); the cuDNN, XLA and explicit (weights, dropout) paths."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math

import jax
import jax.numpy as jnp
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.modeling import attention_choice as choice
from xlmr_jax.modeling.cache import update_layer
from xlmr_jax.modeling.layers import LayerNorm, dense, dropout, fold_key


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["dense", "key_lengths", "right_padded"], meta_fields=["kind"])
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """A boolean attention mask and what is known of its shape, for the fused kernels.

    `dense` is the boolean mask (broadcastable to (batch, heads, queries, keys)) that the XLA and
    explicit paths apply, exactly as before this class existed. cuDNN instead takes the decoder's
    causal mask as a flag and right padding as per-row key lengths, so padding masks carry
    `key_lengths` (batch,) and `right_padded`, a device scalar: whether every row is right padding.
    `&` combines masks like the boolean arrays they stand for.
    """

    dense: jax.Array | None
    kind: str = choice.MASK_OTHER
    key_lengths: jax.Array | None = None
    right_padded: jax.Array | None = None

    @property
    def is_causal(self) -> bool:
        return self.kind in (choice.MASK_CAUSAL, choice.MASK_PADDING_CAUSAL)

    def __and__(self, other: AttentionMask | jax.Array) -> AttentionMask:
        other = as_attention_mask(other)
        dense = self.dense & other.dense
        kinds = {self.kind, other.kind}
        if kinds == {choice.MASK_PADDING, choice.MASK_CAUSAL}:
            pad = self if self.kind == choice.MASK_PADDING else other
            return AttentionMask(dense, choice.MASK_PADDING_CAUSAL, pad.key_lengths, pad.right_padded)
        return AttentionMask(dense)

    __rand__ = __and__


def as_attention_mask(mask: AttentionMask | jax.Array | None) -> AttentionMask | None:
    """A raw boolean array (any layout the fused call broadcasts) is a mask of unknown kind."""
    if mask is None or isinstance(mask, AttentionMask):
        return mask
    return AttentionMask(jnp.asarray(mask))


def padding_mask(attention_mask: jax.Array) -> AttentionMask:
    """(batch, keys) 0/1 -> mask broadcast over heads and queries: `dense` is boolean
    (batch, 1, 1, keys); with the key lengths and whether every row is right padding."""
    real = attention_mask.astype(bool)
    lengths = real.sum(axis=-1, dtype=jnp.int32)
    right_padded = jnp.all(real == (jnp.arange(real.shape[-1])[None, :] < lengths[:, None]))
    return AttentionMask(real[:, None, None, :], choice.MASK_PADDING, lengths, right_padded)


def causal_mask(query_length: int, key_length: int, query_offset: jax.Array | int = 0) -> AttentionMask:
    """Boolean (1, 1, queries, keys): query i (at absolute position offset+i) sees keys <= it.
    Square and not offset (a decoder without cache), it is a plain causal mask for cuDNN."""
    query_pos = jnp.arange(query_length)[:, None] + query_offset
    key_pos = jnp.arange(key_length)[None, :]
    dense = (key_pos <= query_pos)[None, None]
    plain = isinstance(query_offset, int) and query_offset == 0 and query_length == key_length
    return AttentionMask(dense, choice.MASK_CAUSAL if plain else choice.MASK_OTHER)


def scaled_dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: AttentionMask | jax.Array | None,
    *,
    dropout_rate: float,
    dropout_rng: jax.Array | None,
    deterministic: bool,
    return_weights: bool,
    has_cache: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """Attention over (batch, length, heads, head_dim) inputs.

    `attention_choice.choose_attention` picks the implementation: cuDNN's fused kernel on a CUDA
    GPU for bf16/fp16 without cache (right padding as key lengths, causal as a flag), XLA's
    `jax.nn.dot_product_attention` with the boolean mask elsewhere (CPU, TPU, fp32, a cache, any
    other mask), and the explicit einsum path when the weights are asked for or attention dropout
    is active. `has_cache`: keys/values come from a decoding cache.
    """
    scale = 1.0 / math.sqrt(query.shape[-1])
    mask = as_attention_mask(mask)
    platform, capability = choice.default_target()
    picked = choice.choose_attention(
        platform=platform, dtype=query.dtype, head_dim=query.shape[-1],
        mask_kind=choice.MASK_NONE if mask is None else mask.kind, has_cache=has_cache,
        wants_weights=return_weights, dropout_active=not deterministic and dropout_rate > 0.0,
        compute_capability=capability, requested=choice.requested_implementation(),
    )
    if picked.implementation == choice.XLA:
        return _xla_attention(query, key, value, mask, scale), None
    if picked.implementation == choice.CUDNN:
        return fused_attention(query, key, value, mask, picked, scale=scale), None
    # QK^T accumulated in float32 (as the fused path does): under bf16 a product rounded to bf16
    # first moves the logits by several bf16 steps.
    scores = jnp.einsum("btnd,bsnd->bnts", query, key, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        scores = jnp.where(mask.dense, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1)  # softmax in float32 under any compute dtype
    weights = dropout(weights, dropout_rate, dropout_rng, deterministic)
    context = jnp.einsum("bnts,bsnd->btnd", weights.astype(value.dtype), value)
    return context, weights


def _xla_attention(query, key, value, mask: AttentionMask | None, scale: float) -> jax.Array:
    return jax.nn.dot_product_attention(query, key, value, mask=None if mask is None else mask.dense,
                                        scale=scale, implementation="xla")


_FUSED_PARAMETERS = ("implementation", "is_causal", "key_value_seq_lengths")


def _check_fused_api() -> None:
    missing = [name for name in _FUSED_PARAMETERS
               if name not in inspect.signature(jax.nn.dot_product_attention).parameters]
    if not hasattr(jax.lax, "platform_dependent"):
        missing.append("jax.lax.platform_dependent")
    if missing:
        raise RuntimeError(
            f"cuDNN attention needs jax.nn.dot_product_attention({', '.join(_FUSED_PARAMETERS)}) and "
            f"jax.lax.platform_dependent; jax {jax.__version__} lacks {', '.join(missing)}. Trace inside "
            "`xlmr_jax.modeling.attention_choice.attention_implementation('xla')` to use XLA's attention."
        )


def fused_attention(query, key, value, mask: AttentionMask | None, picked: choice.AttentionChoice, *,
                    scale: float, implementation: str = "cudnn") -> jax.Array:
    """The fused call of a "cudnn" choice: no mask array, causal as a flag, right padding as key
    lengths. A padded batch that is not right padded takes the XLA path with the boolean mask (a
    device-side `lax.cond`). `implementation="xla"` runs the very same arguments through XLA's
    fused code (what the CPU tests check); "cudnn" is staged for CUDA only (`platform_dependent`),
    so lowering for another platform (CPU arrays on a GPU machine) takes the XLA path.
    """
    _check_fused_api()

    def fused(q, k, v, key_lengths):
        if key_lengths is not None:
            # A row without any real key would give 0/0 in the kernel, and a NaN row poisons a
            # batch's gradients through 0 x NaN; one key gives a finite (meaningless) pad row.
            key_lengths = jnp.maximum(key_lengths, 1)
        return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=picked.is_causal,
                                            key_value_seq_lengths=key_lengths, implementation=implementation)

    def with_lengths(q, k, v):
        if not picked.key_lengths:
            return fused(q, k, v, None)
        if not picked.right_padding_guard:
            return fused(q, k, v, mask.key_lengths)
        return jax.lax.cond(mask.right_padded,
                            lambda q, k, v, n: fused(q, k, v, n),
                            lambda q, k, v, n: _xla_attention(q, k, v, mask, scale),
                            q, k, v, mask.key_lengths)

    if implementation != "cudnn":
        return with_lengths(query, key, value)
    return jax.lax.platform_dependent(query, key, value, cuda=with_lengths,
                                      default=lambda q, k, v: _xla_attention(q, k, v, mask, scale))


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
        mask: AttentionMask | jax.Array | None,
        *,
        dropout_rng: jax.Array | None,
        deterministic: bool,
        output_attentions: bool,
        has_cache: bool = False,
    ) -> tuple[jax.Array, jax.Array | None]:
        """Queries from `hidden_states` attend over `key_value` (already split into heads);
        `has_cache`: the keys/values come from a decoding cache."""
        query = self.split_heads(self.query(hidden_states))
        context, weights = scaled_dot_product_attention(
            query, *key_value, mask,
            dropout_rate=self.dropout_rate, dropout_rng=dropout_rng,
            deterministic=deterministic, return_weights=output_attentions, has_cache=has_cache,
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
        mask: AttentionMask | jax.Array | None,
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
            # a decoding step (self-attention over the cache, or cross-attention over keys/values
            # projected once) keeps XLA's path: cuDNN serves full-sequence calls
            has_cache=cache is not None or precomputed_key_value is not None,
        )
        out = self.output(context, hidden_states, dropout_rng=fold_key(dropout_rng, 1),
                          deterministic=deterministic)
        return out, weights, new_cache
