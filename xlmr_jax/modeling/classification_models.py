"""Classification heads: sequence, multiple choice, token, and extractive QA."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.modeling import compiled, losses
from xlmr_jax.modeling import validation as v
from xlmr_jax.modeling.heads import XLMRobertaClassificationHead
from xlmr_jax.modeling.layers import dense, dropout, fold_key
from xlmr_jax.modeling.model import XLMRobertaModel
from xlmr_jax.modeling.outputs import (
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from xlmr_jax.pretrained import PreTrainedMixin


class _HeadModel(PreTrainedMixin, nnx.Module):
    """Shared plumbing: `__call__` checks the inputs and the labels (`check_labels`), then runs
    `forward` (compiled once per shape when called eagerly, see `compiled.run`)."""

    hf_prefix = "roberta"
    add_pooling_layer = False

    def __init__(self, config: XLMRobertaConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.dtype = dtype
        self.roberta = XLMRobertaModel(config, add_pooling_layer=self.add_pooling_layer, dtype=dtype,
                                       param_dtype=param_dtype, rngs=rngs)
        self.build_head(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def build_head(self, config, *, dtype, param_dtype, rngs):
        raise NotImplementedError

    def check_labels(self, labels: dict, inputs: dict) -> dict:
        """The label arguments as arrays, checked (shapes, dtypes; values when concrete)."""
        raise NotImplementedError

    def _run(self, inputs: dict, labels: dict, *, output_hidden_states, output_attentions, deterministic,
             dropout_rng):
        inputs = self.roberta.check_inputs(**inputs)
        labels = self.check_labels(labels, inputs)
        options = dict(output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                       deterministic=deterministic)
        return compiled.run(self, type(self).forward, {**inputs, **labels, "dropout_rng": dropout_rng}, options)

    def encode(self, inputs: dict, dropout_rng):
        return self.roberta.forward(**inputs, dropout_rng=fold_key(dropout_rng, 0))


def _batch_and_length(inputs: dict) -> tuple[int, int]:
    source = inputs["input_ids"] if inputs["input_ids"] is not None else inputs["inputs_embeds"]
    return source.shape[0], source.shape[1]


def _check_class_ids(name: str, labels, shapes, classes: int):
    labels = v.check_labels(name, labels, shapes, integer=True)
    losses.check_label_values(name, labels, classes, losses.IGNORE_INDEX)
    return labels


class XLMRobertaForSequenceClassification(_HeadModel):
    """Sentence(-pair) classification or regression from the `<s>` token (no pooler)."""

    hf_architecture = "XLMRobertaForSequenceClassification"

    def build_head(self, config, *, dtype, param_dtype, rngs):
        self.classifier = XLMRobertaClassificationHead(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 labels=None, *, inputs_embeds=None, output_hidden_states=False, output_attentions=False,
                 deterministic=True, dropout_rng=None) -> SequenceClassifierOutput:
        return self._run(
            dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                 position_ids=position_ids, inputs_embeds=inputs_embeds), dict(labels=labels),
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
            deterministic=deterministic, dropout_rng=dropout_rng,
        )

    def check_labels(self, labels, inputs):
        labels = labels["labels"]
        if labels is None:
            return {"labels": None}
        batch = _batch_and_length(inputs)[0]
        n, problem = self.config.num_labels, self.config.problem_type
        labels = v.as_array("labels", labels)
        integer = jnp.issubdtype(labels.dtype, jnp.integer)
        if problem == "single_label_classification" or (problem is None and n > 1 and integer):
            return {"labels": _check_class_ids("labels", labels, [(batch,)], n)}
        if problem == "regression" or (problem is None and n == 1):
            shapes = [(batch,), (batch, 1)] if n == 1 else [(batch, n)]
            return {"labels": v.check_labels("labels", labels, shapes, integer=False)}
        return {"labels": v.check_labels("labels", labels, [(batch, n)], integer=False)}

    def forward(self, *, labels=None, dropout_rng=None, **inputs) -> SequenceClassifierOutput:
        deterministic = inputs["deterministic"]
        out = self.encode(inputs, dropout_rng)
        logits = self.classifier(out.last_hidden_state, dropout_rng=fold_key(dropout_rng, 1),
                                 deterministic=deterministic)
        loss = None
        if labels is not None:
            loss = losses.sequence_classification_loss(logits, labels, self.config.num_labels,
                                                        self.config.problem_type)
        return SequenceClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


class XLMRobertaForMultipleChoice(_HeadModel):
    """Inputs (batch, choices, length); pooler -> dropout -> classifier(H, 1) -> (batch, choices)."""

    hf_architecture = "XLMRobertaForMultipleChoice"
    add_pooling_layer = True

    def build_head(self, config, *, dtype, param_dtype, rngs):
        self.classifier = dense(config.hidden_size, 1, config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dropout_rate = config.hidden_dropout_prob

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 labels=None, *, inputs_embeds=None, output_hidden_states=False, output_attentions=False,
                 deterministic=True, dropout_rng=None) -> MultipleChoiceModelOutput:
        source = input_ids if input_ids is not None else inputs_embeds
        expected_rank = 3 if input_ids is not None else 4
        name = "input_ids" if input_ids is not None else "inputs_embeds"
        if source is None or getattr(source, "ndim", None) != expected_rank:
            raise ValueError(f"{name}: multiple choice expects rank {expected_rank} "
                             f"(batch, choices, length{', hidden' if expected_rank == 4 else ''}), "
                             f"got shape {tuple(getattr(source, 'shape', ()))}")
        batch, choices, length = source.shape[:3]

        def flat(name, x):
            if x is None:
                return None
            x = v.as_array(name, x)
            if tuple(x.shape[:3]) != (batch, choices, length):
                raise ValueError(f"{name}: expected shape {(batch, choices, length)}, got {tuple(x.shape)}")
            return x.reshape(batch * choices, length, *x.shape[3:])

        # The encoder sees (batch * choices) rows; `choices` (static) folds the logits back.
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      position_ids=position_ids, inputs_embeds=inputs_embeds)
        inputs = {name: flat(name, x) for name, x in inputs.items()}
        inputs = self.roberta.check_inputs(**inputs)
        if labels is not None:
            labels = _check_class_ids("labels", labels, [(batch,)], choices)
        options = dict(output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                       deterministic=deterministic, choices=choices)
        return compiled.run(self, XLMRobertaForMultipleChoice.forward,
                            {**inputs, "labels": labels, "dropout_rng": dropout_rng}, options)

    def forward(self, *, choices: int, labels=None, dropout_rng=None, **inputs) -> MultipleChoiceModelOutput:
        out = self.encode(inputs, dropout_rng)
        pooled = dropout(out.pooler_output, self.dropout_rate, fold_key(dropout_rng, 1), inputs["deterministic"])
        logits = self.classifier(pooled).reshape(-1, choices)
        loss = None if labels is None else losses.cross_entropy(logits, labels)
        return MultipleChoiceModelOutput(logits=logits, loss=loss, hidden_states=out.hidden_states,
                                         attentions=out.attentions)


class XLMRobertaForTokenClassification(_HeadModel):
    """Per-token labels (NER, POS): dropout -> classifier(H, num_labels); label -100 is ignored."""

    hf_architecture = "XLMRobertaForTokenClassification"

    def build_head(self, config, *, dtype, param_dtype, rngs):
        self.classifier = dense(config.hidden_size, config.num_labels, config,
                                dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dropout_rate = config.classifier_dropout_rate

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 labels=None, *, inputs_embeds=None, output_hidden_states=False, output_attentions=False,
                 deterministic=True, dropout_rng=None) -> TokenClassifierOutput:
        return self._run(
            dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                 position_ids=position_ids, inputs_embeds=inputs_embeds), dict(labels=labels),
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
            deterministic=deterministic, dropout_rng=dropout_rng,
        )

    def check_labels(self, labels, inputs):
        labels = labels["labels"]
        if labels is None:
            return {"labels": None}
        return {"labels": _check_class_ids("labels", labels, [_batch_and_length(inputs)], self.config.num_labels)}

    def forward(self, *, labels=None, dropout_rng=None, **inputs) -> TokenClassifierOutput:
        out = self.encode(inputs, dropout_rng)
        x = dropout(out.last_hidden_state, self.dropout_rate, fold_key(dropout_rng, 1), inputs["deterministic"])
        logits = self.classifier(x)
        loss = None if labels is None else losses.cross_entropy(logits, labels)
        return TokenClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states,
                                     attentions=out.attentions)


class XLMRobertaForQuestionAnswering(_HeadModel):
    """Extractive QA: `qa_outputs` linear(H, 2) split into start/end logits."""

    hf_architecture = "XLMRobertaForQuestionAnswering"

    def build_head(self, config, *, dtype, param_dtype, rngs):
        if config.num_labels != 2:
            raise ValueError(f"XLMRobertaForQuestionAnswering needs num_labels=2 (start, end), "
                             f"config has {config.num_labels}")
        self.qa_outputs = dense(config.hidden_size, 2, config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 start_positions=None, end_positions=None, *, inputs_embeds=None,
                 output_hidden_states=False, output_attentions=False, deterministic=True,
                 dropout_rng=None) -> QuestionAnsweringModelOutput:
        return self._run(
            dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                 position_ids=position_ids, inputs_embeds=inputs_embeds),
            dict(start_positions=start_positions, end_positions=end_positions),
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
            deterministic=deterministic, dropout_rng=dropout_rng,
        )

    def check_labels(self, labels, inputs):
        start_positions, end_positions = labels["start_positions"], labels["end_positions"]
        if (start_positions is None) != (end_positions is None):
            raise ValueError("give both start_positions and end_positions, or neither")
        if start_positions is not None:
            batch = _batch_and_length(inputs)[0]
            # positions outside the window are clamped to it and ignored, as in the reference
            shapes = [(batch,), (batch, 1)]
            start_positions = v.check_labels("start_positions", start_positions, shapes, integer=True)
            end_positions = v.check_labels("end_positions", end_positions, shapes, integer=True)
        return dict(start_positions=start_positions, end_positions=end_positions)

    def forward(self, *, start_positions=None, end_positions=None, dropout_rng=None,
                **inputs) -> QuestionAnsweringModelOutput:
        out = self.encode(inputs, dropout_rng)
        logits = self.qa_outputs(out.last_hidden_state)
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None:
            loss = losses.span_loss(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(start_logits=start_logits, end_logits=end_logits, loss=loss,
                                            hidden_states=out.hidden_states, attentions=out.attentions)
