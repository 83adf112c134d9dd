"""Output containers with the reference's field names; pytrees, so jitted functions return them."""

from __future__ import annotations

import jax
from flax import struct

from xlmr_jax.modeling.cache import KVCache

Array = jax.Array
Layers = tuple[jax.Array, ...] | None


@struct.dataclass
class BaseModelOutput:
    """`hidden_states`: embeddings + each layer's output (the last equals `last_hidden_state`);
    `attentions`: one (batch, heads, queries, keys) array per layer, float32."""

    last_hidden_state: Array
    pooler_output: Array | None = None
    hidden_states: Layers = None
    attentions: Layers = None
    cross_attentions: Layers = None
    cache: KVCache | None = None


@struct.dataclass
class MaskedLMOutput:
    logits: Array
    loss: Array | None = None
    hidden_states: Layers = None
    attentions: Layers = None


@struct.dataclass
class CausalLMOutput:
    logits: Array
    loss: Array | None = None
    hidden_states: Layers = None
    attentions: Layers = None
    cross_attentions: Layers = None
    cache: KVCache | None = None


@struct.dataclass
class SequenceClassifierOutput:
    logits: Array
    loss: Array | None = None
    hidden_states: Layers = None
    attentions: Layers = None


@struct.dataclass
class MultipleChoiceModelOutput:
    logits: Array
    loss: Array | None = None
    hidden_states: Layers = None
    attentions: Layers = None


@struct.dataclass
class TokenClassifierOutput:
    logits: Array
    loss: Array | None = None
    hidden_states: Layers = None
    attentions: Layers = None


@struct.dataclass
class QuestionAnsweringModelOutput:
    start_logits: Array
    end_logits: Array
    loss: Array | None = None
    hidden_states: Layers = None
    attentions: Layers = None
