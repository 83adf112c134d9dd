"""feature-extraction: the encoder's last hidden states of each text, as `transformers.pipeline(
"feature-extraction")` returns them: a nested list [1, length, hidden] per text (real tokens only,
specials included), or with `return_tensors=True` a float32 numpy array of that shape.

Any XLM-R checkpoint serves (a task head's encoder is read without its head); the pooler is not
loaded, as no output uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from xlmr_jax.modeling import XLMRobertaModel
from xlmr_jax.pipelines.base import Feature, Pipeline
from xlmr_jax.pipelines.text_inputs import encode_text


class FeatureExtractionPipeline(Pipeline):
    task = "feature-extraction"
    model_class = XLMRobertaModel
    load_kwargs: ClassVar[dict[str, Any]] = {"add_pooling_layer": False}
    defaults: ClassVar[dict[str, Any]] = {"truncation": False, "return_tensors": False}

    def check_options(self, options):
        options = super().check_options(options)
        if not isinstance(options["return_tensors"], bool):
            raise TypeError(f"{self.task}: return_tensors must be a bool, got {options['return_tensors']!r}")
        return options

    def preprocess(self, item, index: int, options: Mapping[str, Any]) -> list[Feature]:
        return [Feature({"input_ids": encode_text(self, item, index, truncation=options["truncation"])}, index)]

    def compute(self, model, batch, static):
        hidden = model(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        return {"hidden": hidden.astype(jnp.float32)}

    def postprocess(self, item, features, outputs, options):
        (feature,), (output,) = features, outputs
        hidden = np.asarray(output["hidden"][None, :feature.length], dtype=np.float32)
        return hidden if options["return_tensors"] else hidden.tolist()
