"""Word + token-type + position embeddings, with the reference's fairseq position ids."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.modeling.layers import Embedding, LayerNorm, dropout


def position_ids_from_input_ids(input_ids: jax.Array, pad_token_id: int, past_length=0) -> jax.Array:
    """fairseq positions: pads get `pad_token_id`, real tokens count up from `pad_token_id + 1`
    (+ `past_length` when decoding with a cache), so 512 tokens fit in 514 rows."""
    not_pad = (input_ids != pad_token_id).astype(jnp.int32)
    return (jnp.cumsum(not_pad, axis=1) + past_length) * not_pad + pad_token_id


def position_ids_from_length(batch: int, length: int, pad_token_id: int) -> jax.Array:
    """For `inputs_embeds`, where pads cannot be seen: sequential ids from `pad_token_id + 1`."""
    positions = jnp.arange(pad_token_id + 1, length + pad_token_id + 1, dtype=jnp.int32)
    return jnp.broadcast_to(positions, (batch, length))


class XLMRobertaEmbeddings(nnx.Module):
    def __init__(self, config: XLMRobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h = config.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.word_embeddings = Embedding(config.vocab_size, h, config, padding_idx=config.pad_token_id, **kw)
        self.position_embeddings = Embedding(
            config.max_position_embeddings, h, config, padding_idx=config.pad_token_id, **kw
        )
        self.token_type_embeddings = Embedding(config.type_vocab_size, h, config, **kw)
        if not config.pre_layer_norm:  # XL/XXL have no embedding LayerNorm
            self.LayerNorm = LayerNorm(h, config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.pre_layer_norm = config.pre_layer_norm
        self.pad_token_id = config.pad_token_id
        self.dropout_rate = config.hidden_dropout_prob

    def __call__(
        self,
        input_ids: jax.Array | None,
        *,
        token_type_ids: jax.Array | None = None,
        position_ids: jax.Array | None = None,
        inputs_embeds: jax.Array | None = None,
        past_length=0,
        dropout_rng: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if position_ids is None:
            if input_ids is not None:
                position_ids = position_ids_from_input_ids(input_ids, self.pad_token_id, past_length)
            else:
                position_ids = position_ids_from_length(batch, length, self.pad_token_id)
        if token_type_ids is None:
            token_type_ids = jnp.zeros((batch, length), jnp.int32)
        x = inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        if not self.pre_layer_norm:
            x = self.LayerNorm(x)
        return dropout(x, self.dropout_rate, dropout_rng, deterministic)
