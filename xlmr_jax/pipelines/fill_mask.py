"""fill-mask: the most likely tokens at each `<mask>`, as `transformers.pipeline("fill-mask")` returns
them (score, token, token_str, sequence; a list per mask when a text has several).

The vocabulary projection (for base 2.3x the encoder's FLOPs over a whole sequence) is applied only
at the mask positions, and the top-k is taken on the device: only k scores per mask come back.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from xlmr_jax.modeling import XLMRobertaForMaskedLM
from xlmr_jax.pipelines.base import Feature, Pipeline
from xlmr_jax.pipelines.text_inputs import encode_text


class FillMaskPipeline(Pipeline):
    task = "fill-mask"
    model_class = XLMRobertaForMaskedLM
    defaults: ClassVar[dict[str, Any]] = {"top_k": 5, "targets": None, "truncation": False}

    def check_options(self, options):
        options = super().check_options(options)
        top_k = options["top_k"]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"fill-mask: top_k must be an integer >= 1, got {top_k!r}")
        targets = options["targets"]
        if targets is not None:
            targets = (targets,) if isinstance(targets, str) else tuple(targets)
            if not targets:
                raise ValueError("fill-mask: targets is empty; give at least one target")
            for target in targets:
                if not isinstance(target, str) or not target:
                    raise ValueError(f"fill-mask: targets must be non-empty strings, got {target!r}")
            options = {**options, "targets": targets}
        return options

    @functools.cached_property
    def _vocab(self) -> dict[str, int]:
        return self.tokenizer.get_vocab()

    def _target_ids(self, targets: tuple[str, ...]) -> tuple[int, ...]:
        """Each target as one vocabulary id; a word that is not one piece takes its first piece (as the
        reference does, which also warns)."""
        ids = []
        for target in targets:
            vocab_id = self._vocab.get(target)
            if vocab_id is None:
                pieces = self.tokenizer.encode(target, add_special_tokens=False)
                if not pieces:
                    raise ValueError(f"fill-mask: the target {target!r} is no token of the vocabulary")
                vocab_id = pieces[0]
            ids.append(vocab_id)
        return tuple(dict.fromkeys(ids))  # the reference drops repeated targets

    def preprocess(self, item, index: int, options: Mapping[str, Any]) -> list[Feature]:
        ids = encode_text(self, item, index, truncation=options["truncation"])
        positions = np.flatnonzero(ids == self.tokenizer.mask_token_id).astype(np.int32)
        if positions.size == 0:
            raise ValueError(f"fill-mask: text {index} has no mask token ({self.tokenizer.mask_token}): {item!r}")
        return [Feature({"input_ids": ids, "mask_positions": positions}, index, meta=ids)]

    def static(self, options):
        targets = None if options["targets"] is None else self._target_ids(options["targets"])
        return min(options["top_k"], len(targets)) if targets is not None else options["top_k"], targets

    def compute(self, model, batch, static):
        top_k, targets = static
        hidden = model.roberta(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        at_masks = jnp.take_along_axis(hidden, batch["mask_positions"][..., None], axis=1)
        probabilities = jax.nn.softmax(model.logits(at_masks).astype(jnp.float32), axis=-1)
        if targets is not None:
            probabilities = probabilities[..., jnp.asarray(targets)]
        scores, indices = jax.lax.top_k(probabilities, top_k)
        if targets is not None:
            indices = jnp.asarray(targets)[indices]
        return {"scores": scores, "tokens": indices}

    def postprocess(self, item, features, outputs, options):
        (feature,), (output,) = features, outputs
        ids, positions = feature.meta, feature.arrays["mask_positions"]
        single_mask = len(positions) == 1
        per_mask = []
        for i, position in enumerate(positions):
            row = []
            for score, token in zip(output["scores"][i].tolist(), output["tokens"][i].tolist(), strict=True):
                filled = ids.copy()
                filled[position] = token
                # Other masks stay visible in the sequence of a text with several (as the reference does).
                sequence = self.tokenizer.decode(filled, skip_special_tokens=single_mask)
                row.append({"score": score, "token": token, "token_str": self.tokenizer.decode([token]),
                            "sequence": sequence})
            per_mask.append(row)
        return per_mask[0] if single_mask else per_mask
