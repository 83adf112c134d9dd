"""The bare encoder `XLMRobertaModel`: embeddings, scanned layers, optional pooler."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.modeling import compiled
from xlmr_jax.modeling import validation as v
from xlmr_jax.modeling.attention import causal_mask, padding_mask
from xlmr_jax.modeling.cache import KVCache
from xlmr_jax.modeling.embeddings import XLMRobertaEmbeddings
from xlmr_jax.modeling.encoder import XLMRobertaEncoder
from xlmr_jax.modeling.layers import dense, fold_key
from xlmr_jax.modeling.outputs import BaseModelOutput
from xlmr_jax.pretrained import PreTrainedMixin


class XLMRobertaPooler(nnx.Module):
    """dense + tanh on the first token (`<s>`)."""

    def __init__(self, config: XLMRobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.dense = dense(config.hidden_size, config.hidden_size, config,
                           dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, hidden_states: jax.Array) -> jax.Array:
        return jnp.tanh(self.dense(hidden_states[:, 0]))


class XLMRobertaModel(PreTrainedMixin, nnx.Module):
    """The encoder (or decoder, with `config.is_decoder`) with an optional pooler.

    Call as `model(input_ids, attention_mask=None, token_type_ids=None, position_ids=None, ...)`
    with (batch, length) integer arrays; returns `BaseModelOutput`. Dropout runs only with
    `deterministic=False` and a `dropout_rng` key. Inputs are checked eagerly; called outside a
    JAX transformation, `forward` then runs compiled, once per input shape and options
    (`xlmr_jax.modeling.compiled`), so a second call with the same shapes compiles nothing.
    """

    hf_prefix = ""
    hf_architecture = "XLMRobertaModel"

    def __init__(
        self,
        config: XLMRobertaConfig,
        *,
        add_pooling_layer: bool = True,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.dtype = dtype
        self.embeddings = XLMRobertaEmbeddings(config, **kw)
        self.encoder = XLMRobertaEncoder(config, **kw)
        self.pooler = XLMRobertaPooler(config, **kw) if add_pooling_layer else None

    def init_cache(
        self, batch_size: int, max_length: int, *, encoder_hidden_states: jax.Array | None = None, dtype=None
    ) -> KVCache:
        """An empty decoding cache of `max_length` positions (prompt + new tokens).

        With cross-attention, pass `encoder_hidden_states`: their keys/values are projected once
        here and reused at every step."""
        cfg = self.config
        if not cfg.is_decoder:
            raise ValueError("init_cache: the KV cache needs a decoder (config.is_decoder=True)")
        if max_length > cfg.max_sequence_length:
            raise ValueError(
                f"init_cache: max_length={max_length} exceeds the {cfg.max_sequence_length} positions "
                f"the model has (max_position_embeddings={cfg.max_position_embeddings})"
            )
        cache = KVCache.empty(cfg.num_hidden_layers, batch_size, max_length, cfg.num_attention_heads,
                              cfg.head_dim, dtype or self.dtype)
        if encoder_hidden_states is not None:
            if not cfg.add_cross_attention:
                raise ValueError("init_cache: encoder_hidden_states given but config.add_cross_attention=False")
            encoder_hidden_states = _check_encoder_states(encoder_hidden_states, batch_size, cfg.hidden_size)
            cross_key, cross_value = compiled.run(self.encoder, XLMRobertaEncoder.project_cross_key_values,
                                                  {"encoder_hidden_states": encoder_hidden_states}, {})
            cache = cache.replace(cross_key=cross_key, cross_value=cross_value)
        return cache

    def __call__(
        self,
        input_ids: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        position_ids: jax.Array | None = None,
        *,
        inputs_embeds: jax.Array | None = None,
        encoder_hidden_states: jax.Array | None = None,
        encoder_attention_mask: jax.Array | None = None,
        cache: KVCache | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        dropout_rng: jax.Array | None = None,
    ) -> BaseModelOutput:
        inputs = self.check_inputs(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, cache=cache,
        )
        options = dict(output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                       deterministic=deterministic)
        return compiled.run(self, XLMRobertaModel.forward, {**inputs, "dropout_rng": dropout_rng}, options)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        *,
        inputs_embeds=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        cache: KVCache | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        dropout_rng=None,
    ) -> BaseModelOutput:
        """The computation of `__call__` on inputs that `check_inputs` has accepted."""
        cfg = self.config
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        past_length = 0 if cache is None else cache.index
        embedding_output = self.embeddings(
            input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            past_length=past_length, dropout_rng=fold_key(dropout_rng, 0), deterministic=deterministic,
        )
        mask = self._self_attention_mask(attention_mask, length, cache)
        # check_inputs dropped the encoder mask where nothing attends to the encoder
        encoder_mask = None if encoder_attention_mask is None else padding_mask(encoder_attention_mask)
        last, per_layer, self_w, cross_w, new_cache = self.encoder(
            embedding_output, mask, encoder_hidden_states=encoder_hidden_states, encoder_mask=encoder_mask,
            cache=cache, dropout_rng=fold_key(dropout_rng, 1), deterministic=deterministic,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
        )
        hidden_states = None
        if output_hidden_states:
            # As in the reference: embeddings, then each layer; the last entry is the final
            # output (post final LayerNorm in the XL layout).
            layers = [per_layer[i] for i in range(cfg.num_hidden_layers - 1)]
            hidden_states = (embedding_output, *layers, last)
        return BaseModelOutput(
            last_hidden_state=last,
            pooler_output=self.pooler(last) if self.pooler is not None else None,
            hidden_states=hidden_states,
            attentions=_unstack(self_w) if output_attentions else None,
            cross_attentions=_unstack(cross_w) if output_attentions and cross_w is not None else None,
            cache=new_cache,
        )

    # -- masks ----------------------------------------------------------------------------
    def _self_attention_mask(self, attention_mask, length: int, cache: KVCache | None):
        pad = None if attention_mask is None else padding_mask(attention_mask)
        if cache is not None:
            causal = causal_mask(length, cache.max_length, cache.index)
            return causal if pad is None else causal & pad
        if self.config.is_decoder:
            causal = causal_mask(length, length)
            return causal if pad is None else causal & pad
        return pad

    # -- input checks ---------------------------------------------------------------------
    def check_inputs(self, *, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                     inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
                     cache: KVCache | None = None) -> dict:
        """Shapes and dtypes always, values when concrete; errors name the argument. Returns the
        inputs as arrays (the keyword arguments of `forward`)."""
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            input_ids = v.check_integer("input_ids", input_ids, rank=2)
            v.check_range("input_ids", input_ids, 0, cfg.vocab_size)
            batch, length = input_ids.shape
        else:
            if getattr(inputs_embeds, "ndim", None) != 3:
                raise ValueError(f"inputs_embeds: expected rank 3 (batch, length, hidden), got "
                                 f"shape {tuple(getattr(inputs_embeds, 'shape', ()))}")
            batch, length = inputs_embeds.shape[:2]
            inputs_embeds = v.check_float("inputs_embeds", inputs_embeds, (batch, length, cfg.hidden_size))
        if token_type_ids is not None:
            token_type_ids = v.check_integer("token_type_ids", token_type_ids, shape=(batch, length))
            v.check_range("token_type_ids", token_type_ids, 0, cfg.type_vocab_size)
        if position_ids is not None:
            position_ids = v.check_integer("position_ids", position_ids, shape=(batch, length))
            v.check_range("position_ids", position_ids, 0, cfg.max_position_embeddings)
        if cache is not None:
            if not cfg.is_decoder:
                raise ValueError("cache given but the model is not a decoder (config.is_decoder=False)")
            if cache.batch_size != batch:
                raise ValueError(f"cache: built for batch {cache.batch_size}, inputs have batch {batch}")
            if length > cache.max_length:
                raise ValueError(f"input length {length} exceeds the cache's max_length {cache.max_length}")
            if attention_mask is not None:
                attention_mask = v.check_integer_or_bool_mask("attention_mask", attention_mask,
                                                              (batch, cache.max_length))
        else:
            if attention_mask is not None:
                attention_mask = v.check_integer_or_bool_mask("attention_mask", attention_mask, (batch, length))
            if position_ids is None and input_ids is not None:
                # Pads take the pad's own position: only real tokens must fit (as in the reference).
                v.check_real_lengths("input_ids", input_ids, cfg.pad_token_id, cfg.max_sequence_length)
            elif position_ids is None and length > cfg.max_sequence_length:
                raise ValueError(
                    f"input length {length} exceeds the model's {cfg.max_sequence_length} positions "
                    f"(max_position_embeddings={cfg.max_position_embeddings} minus pad_token_id + 1)"
                )
        has_cross = encoder_hidden_states is not None or (cache is not None and cache.cross_key is not None)
        if encoder_hidden_states is not None:
            if not cfg.add_cross_attention:
                raise ValueError(
                    "encoder_hidden_states given but the model has no cross-attention "
                    "(config.add_cross_attention=False)"
                )
            encoder_hidden_states = _check_encoder_states(encoder_hidden_states, batch, cfg.hidden_size)
        if encoder_attention_mask is not None and has_cross:
            if encoder_hidden_states is not None:
                enc_len = encoder_hidden_states.shape[1]
            else:
                enc_len = cache.cross_key.shape[2]  # (layers, batch, length, heads, head_dim)
            encoder_attention_mask = v.check_integer_or_bool_mask(
                "encoder_attention_mask", encoder_attention_mask, (batch, enc_len)
            )
        else:
            encoder_attention_mask = None  # nothing attends to the encoder: the mask has no use
        return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                    position_ids=position_ids, inputs_embeds=inputs_embeds, cache=cache,
                    encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask)


def _check_encoder_states(states, batch: int, hidden: int):
    states = v.as_array("encoder_hidden_states", states)
    if states.ndim != 3:
        raise ValueError(f"encoder_hidden_states: expected rank 3 (batch, length, hidden), got shape "
                         f"{tuple(states.shape)}")
    return v.check_float("encoder_hidden_states", states, (batch, states.shape[1], hidden))


def _unstack(stacked: jax.Array | None):
    return None if stacked is None else tuple(stacked[i] for i in range(stacked.shape[0]))
