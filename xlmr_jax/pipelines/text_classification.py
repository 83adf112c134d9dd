"""text-classification: labels and scores of texts or text pairs, as `transformers.pipeline(
"text-classification")` returns them.

A pair (a cross-encoder reranker's query and passage, an NLI premise and hypothesis) is a dict
`{"text": ..., "text_pair": ...}`. Without `top_k`, each input gets its top label as one dict (a
single text gets it inside a list, as the reference does); `top_k=N` gives the N best labels
sorted, `top_k=None` all of them. `function_to_apply="default"` follows the config as the
reference does: nothing for regression, sigmoid for multi-label or one label, softmax otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from xlmr_jax.modeling import XLMRobertaForSequenceClassification
from xlmr_jax.pipelines.base import Feature, Pipeline, sigmoid, softmax
from xlmr_jax.pipelines.text_inputs import encode_text

FUNCTIONS = ("default", "sigmoid", "softmax", "none")


class _TopLabel:
    """`top_k` not given: the reference's one-dict-per-input result."""

    def __repr__(self) -> str:
        return "<top label>"


TOP_LABEL = _TopLabel()


class TextClassificationPipeline(Pipeline):
    task = "text-classification"
    model_class = XLMRobertaForSequenceClassification
    defaults: ClassVar[dict[str, Any]] = {"top_k": TOP_LABEL, "function_to_apply": "default", "truncation": False}

    def check_options(self, options):
        options = super().check_options(options)
        top_k = options["top_k"]
        if top_k is not TOP_LABEL and top_k is not None and (
                isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"{self.task}: top_k must be an integer >= 1 or None (every label), got {top_k!r}")
        function = options["function_to_apply"]
        function = "default" if function is None else function
        if not isinstance(function, str) or function.lower() not in FUNCTIONS:
            raise ValueError(f"{self.task}: function_to_apply must be one of {', '.join(FUNCTIONS)}; "
                             f"got {function!r}")
        return {**options, "function_to_apply": function.lower()}

    def __call__(self, inputs, **options):
        result = super().__call__(inputs, **options)
        # The reference wraps a single text's result in a list unless top_k is given to the call.
        return [result] if isinstance(inputs, str) and "top_k" not in options else result

    def is_single(self, inputs) -> bool:
        return isinstance(inputs, str | Mapping)

    def preprocess(self, item, index: int, options: Mapping[str, Any]) -> list[Feature]:
        text, pair = item, None
        if isinstance(item, Mapping):
            keys = set(item)
            if "text" not in keys or not keys <= {"text", "text_pair"}:
                raise ValueError(f'{self.task}: input {index}: a text pair is a dict {{"text": ..., "text_pair": '
                                 f'...}}; got one with the keys {sorted(map(str, keys))}')
            text, pair = item["text"], item.get("text_pair")
        elif isinstance(item, list | tuple):
            raise ValueError(f"{self.task}: input {index} is a {type(item).__name__}: to classify a text pair, "  # noqa: TRY004
                             'send a dict {"text": ..., "text_pair": ...}')
        ids = encode_text(self, text, index, pair=pair, truncation=options["truncation"])
        return [Feature({"input_ids": ids}, index)]

    def compute(self, model, batch, static):
        logits = model(batch["input_ids"], batch["attention_mask"]).logits
        return {"logits": logits.astype(jnp.float32)}

    def default_function(self) -> str:
        problem = self.config.problem_type
        if problem == "regression":
            return "none"
        if problem == "multi_label_classification" or self.config.num_labels == 1:
            return "sigmoid"
        return "softmax"

    def postprocess(self, item, features, outputs, options):
        (output,) = outputs
        logits = np.asarray(output["logits"], dtype=np.float32)
        function = options["function_to_apply"]
        function = self.default_function() if function == "default" else function
        scores = {"sigmoid": sigmoid, "softmax": softmax, "none": lambda x: x}[function](logits)
        labels = self.labels()
        top_k = options["top_k"]
        if top_k is TOP_LABEL:
            best = int(scores.argmax())
            return {"label": labels[best], "score": float(scores[best])}
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable, as the reference's sort
        return [{"label": labels[i], "score": float(scores[i])} for i in order[:top_k]]

    def labels(self) -> list[str]:
        id2label = self.config.id2label or {}
        return [id2label.get(i, f"LABEL_{i}") for i in range(self.config.num_labels)]
