"""Language-model heads: masked LM and causal LM (decoder, cross-attention, KV cache)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.modeling import compiled, losses
from xlmr_jax.modeling import validation as v
from xlmr_jax.modeling.cache import KVCache
from xlmr_jax.modeling.heads import XLMRobertaLMHead
from xlmr_jax.modeling.layers import fold_key
from xlmr_jax.modeling.model import XLMRobertaModel
from xlmr_jax.modeling.outputs import CausalLMOutput, MaskedLMOutput
from xlmr_jax.pretrained import PreTrainedMixin


class _LMBase(PreTrainedMixin, nnx.Module):
    hf_prefix = "roberta"

    def __init__(self, config: XLMRobertaConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.dtype = dtype
        self.roberta = XLMRobertaModel(config, add_pooling_layer=False, **kw)
        self.lm_head = XLMRobertaLMHead(config, **kw)

    def logits(self, hidden_states: jax.Array) -> jax.Array:
        """Vocabulary logits in float32 (accumulated and returned in float32 under any compute dtype)."""
        return self.lm_head(hidden_states, self.roberta.embeddings.word_embeddings.embedding[...])

    def _output_logits(self, logits32: jax.Array) -> jax.Array:
        # Returned in the compute dtype; the loss takes the float32 ones, never these rounded ones.
        return logits32.astype(self.dtype)

    def _check_token_labels(self, labels, inputs: dict, *, first_is_target: bool = True, shape=None):
        """Labels (batch, length) of class ids in [0, vocab) or -100, checked before any compute
        (`shape`: another expected shape, (batch, predictions) with `masked_positions`)."""
        if labels is None:
            return None
        source = inputs["input_ids"] if inputs["input_ids"] is not None else inputs["inputs_embeds"]
        labels = v.check_labels("labels", labels, [shape or source.shape[:2]], integer=True)
        targets = labels if first_is_target else labels[:, 1:]
        losses.check_label_values("labels", targets, self.config.vocab_size, losses.IGNORE_INDEX)
        return labels


class XLMRobertaForMaskedLM(_LMBase):
    """Masked LM: logits over the vocabulary; `labels` (-100 = ignored) give the MLM loss.

    `masked_positions` (batch, predictions), an addition to the reference's signature: the vocabulary
    projection runs only at these positions (-1 = none, filling a row up to the static width), and
    `logits` and `labels` are (batch, predictions). Training needs logits only where tokens are
    masked (~15%), and the projection onto the vocabulary is the largest matmul of a small model:
    BERT's pretraining gathered the same way (its max_predictions_per_seq)."""

    hf_architecture = "XLMRobertaForMaskedLM"

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        labels=None,
        *,
        masked_positions=None,
        inputs_embeds=None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        dropout_rng=None,
    ) -> MaskedLMOutput:
        inputs = self.roberta.check_inputs(input_ids=input_ids, attention_mask=attention_mask,
                                           token_type_ids=token_type_ids, position_ids=position_ids,
                                           inputs_embeds=inputs_embeds)
        source = inputs["input_ids"] if inputs["input_ids"] is not None else inputs["inputs_embeds"]
        if masked_positions is not None:
            masked_positions = v.check_integer("masked_positions", masked_positions, rank=2)
            if masked_positions.shape[0] != source.shape[0]:
                raise ValueError(f"masked_positions: expected batch {source.shape[0]} (the inputs'), "
                                 f"got shape {tuple(masked_positions.shape)}")
            v.check_range("masked_positions", masked_positions, -1, source.shape[1])
            inputs["masked_positions"] = masked_positions
        inputs["labels"] = self._check_token_labels(
            labels, inputs, shape=None if masked_positions is None else masked_positions.shape)
        options = dict(output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                       deterministic=deterministic)
        return compiled.run(self, XLMRobertaForMaskedLM.forward, {**inputs, "dropout_rng": dropout_rng}, options)

    def forward(self, *, labels=None, masked_positions=None, dropout_rng=None, **inputs) -> MaskedLMOutput:
        """The computation of `__call__` on checked inputs (keyword arguments of `XLMRobertaModel.forward`)."""
        out = self.roberta.forward(**inputs, dropout_rng=fold_key(dropout_rng, 0))
        hidden = out.last_hidden_state
        if masked_positions is not None:
            gather_at = jnp.maximum(masked_positions, 0)[..., None]  # -1 (no position) reads row 0, ignored
            hidden = jnp.take_along_axis(hidden, gather_at, axis=1)
            if labels is not None:
                labels = jnp.where(masked_positions >= 0, labels, losses.IGNORE_INDEX)
        logits = self.logits(hidden)
        loss = None if labels is None else losses.cross_entropy(logits, labels)
        return MaskedLMOutput(logits=self._output_logits(logits), loss=loss, hidden_states=out.hidden_states,
                              attentions=out.attentions)


class XLMRobertaForCausalLM(_LMBase):
    """Decoder LM (needs `config.is_decoder=True`), optional cross-attention and KV cache.

    `labels` are the input ids themselves (-100 = ignored): the loss shifts them by one."""

    hf_architecture = "XLMRobertaForCausalLM"

    def __init__(self, config: XLMRobertaConfig, **kwargs):
        if not config.is_decoder:
            raise ValueError("XLMRobertaForCausalLM needs config.is_decoder=True "
                             "(use config.replace(is_decoder=True))")
        super().__init__(config, **kwargs)

    def init_cache(self, batch_size: int, max_length: int, *, encoder_hidden_states=None, dtype=None) -> KVCache:
        return self.roberta.init_cache(batch_size, max_length, encoder_hidden_states=encoder_hidden_states,
                                       dtype=dtype)

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        labels=None,
        *,
        inputs_embeds=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        cache: KVCache | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        dropout_rng=None,
    ) -> CausalLMOutput:
        inputs = self.roberta.check_inputs(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, cache=cache,
        )
        # position t predicts labels[t + 1]: the first column is never a target
        inputs["labels"] = self._check_token_labels(labels, inputs, first_is_target=False)
        options = dict(output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                       deterministic=deterministic)
        return compiled.run(self, XLMRobertaForCausalLM.forward, {**inputs, "dropout_rng": dropout_rng}, options)

    def forward(self, *, labels=None, dropout_rng=None, **inputs) -> CausalLMOutput:
        """The computation of `__call__` on checked inputs (keyword arguments of `XLMRobertaModel.forward`)."""
        out = self.roberta.forward(**inputs, dropout_rng=fold_key(dropout_rng, 0))
        logits = self.logits(out.last_hidden_state)
        loss = None if labels is None else losses.causal_lm_loss(logits, labels)
        return CausalLMOutput(logits=self._output_logits(logits), loss=loss, hidden_states=out.hidden_states,
                              attentions=out.attentions, cross_attentions=out.cross_attentions, cache=out.cache)

    def generate(self, input_ids, max_new_tokens: int, **kwargs):
        """Greedy or sampled continuation with the KV cache; see `xlmr_jax.generation.generate`."""
        from xlmr_jax.generation import generate

        return generate(self, input_ids, max_new_tokens, **kwargs)
