"""zero-shot-classification: an NLI model scores each candidate label as a hypothesis about the text,
as `transformers.pipeline("zero-shot-classification")` does; the result is {"sequence", "labels",
"scores"}, labels sorted by score.

Each (text, label) pair is one row (`<s> text </s></s> This example is {label}. </s>`, the text
truncated first when too long, as the reference does), so every label of every text goes through
the engine's length-sorted batches together. Scores: a softmax of the entailment logits over the
labels; with `multi_label` (or a single label) each label on its own, entailment against
contradiction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.modeling import XLMRobertaForSequenceClassification
from xlmr_jax.pipelines.base import Feature, Pipeline, softmax
from xlmr_jax.pipelines.text_inputs import encode_text


def nli_label_ids(config: XLMRobertaConfig, source: str = "the model's config") -> tuple[int, int]:
    """(entailment id, contradiction id): the first labels whose names start with "entail" and "contra".
    With no "contra" label, the reference's rule (the first label, or the last when entailment is the
    first); both agree on every NLI label layout where the reference's rule finds contradiction."""
    id2label = config.id2label or {}
    names = [(i, id2label[i].lower()) for i in sorted(id2label)]
    entailment = next((i for i, name in names if name.startswith("entail")), None)
    if entailment is None:
        raise ValueError(f'zero-shot-classification needs an NLI model: no label of {source} starts with '
                         f'"entail" (id2label: {id2label}); name the labels, e.g. '
                         '{0: "contradiction", 1: "neutral", 2: "entailment"}')
    contradiction = next((i for i, name in names if name.startswith("contra")), None)
    if contradiction is None:
        contradiction = config.num_labels - 1 if entailment == 0 else 0
    return entailment, contradiction


class ZeroShotClassificationPipeline(Pipeline):
    task = "zero-shot-classification"
    model_class = XLMRobertaForSequenceClassification
    defaults: ClassVar[dict[str, Any]] = {"candidate_labels": None, "hypothesis_template": "This example is {}.",
                                          "multi_label": False}

    @classmethod
    def checkpoint_options(cls, directory: str) -> dict[str, Any]:
        from xlmr_jax.pretrained import read_config

        nli_label_ids(read_config(directory), f"{directory}/config.json")  # said before a weight is read
        return {}

    def __init__(self, model, tokenizer, **kwargs):
        self.entailment_id, self.contradiction_id = nli_label_ids(model.config)
        super().__init__(model, tokenizer, **kwargs)

    def __call__(self, inputs, *args, **options):
        if len(args) == 1 and "candidate_labels" not in options:  # labels as the second argument, as the reference
            options["candidate_labels"] = args[0]
        elif args:
            raise ValueError(f"{self.task}: unable to understand extra arguments {args}; give candidate_labels=")
        return super().__call__(inputs, **options)

    def check_options(self, options):
        options = super().check_options(options)
        labels = options["candidate_labels"]
        if labels is not None:
            if isinstance(labels, str):
                labels = [label.strip() for label in labels.split(",") if label.strip()]
            if not isinstance(labels, list | tuple) or not all(isinstance(label, str) for label in labels):
                raise TypeError(f"{self.task}: candidate_labels must be a list of str or one str of "
                                f"comma-separated labels, got {labels!r}")
            if not labels:
                raise ValueError(f"{self.task}: candidate_labels is empty; give at least one label")
            options = {**options, "candidate_labels": tuple(labels)}
        template = options["hypothesis_template"]
        if not isinstance(template, str):
            raise TypeError(f"{self.task}: hypothesis_template must be a str, got {type(template).__name__}")
        if labels and template.format(options["candidate_labels"][0]) == template:
            raise ValueError(f'{self.task}: the hypothesis_template "{template}" has no place for the label; '
                             'put {} where it goes, e.g. "This example is {}."')
        if not isinstance(options["multi_label"], bool):
            raise TypeError(f"{self.task}: multi_label must be a bool, got {options['multi_label']!r}")
        return options

    def preprocess(self, item, index: int, options: Mapping[str, Any]) -> list[Feature]:
        labels = options["candidate_labels"]
        if labels is None:
            raise ValueError(f"{self.task}: give candidate_labels (a list of labels, or one str of "
                             "comma-separated labels)")
        template = options["hypothesis_template"]
        return [Feature({"input_ids": encode_text(self, item, index, pair=template.format(label),
                                                   truncation="only_first")}, index)
                for label in labels]

    def compute(self, model, batch, static):
        logits = model(batch["input_ids"], batch["attention_mask"]).logits
        return {"logits": logits.astype(jnp.float32)}

    def postprocess(self, item, features, outputs, options):
        labels = options["candidate_labels"]
        logits = np.stack([np.asarray(output["logits"], dtype=np.float32) for output in outputs])  # (labels, classes)
        if options["multi_label"] or len(labels) == 1:
            scores = softmax(logits[:, [self.contradiction_id, self.entailment_id]])[:, 1]
        else:
            scores = softmax(logits[:, self.entailment_id])
        order = list(reversed(scores.argsort()))
        return {"sequence": item, "labels": [labels[i] for i in order], "scores": [float(scores[i]) for i in order]}
