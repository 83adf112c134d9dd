"""text-generation for `XLMRobertaForCausalLM` (decoder mode) through the jitted `generate` with the
KV cache: `[{"generated_text": prompt + continuation}]` per prompt, as the reference's pipeline
returns it (`return_full_text=False`: the continuation alone; `return_tensors=True`:
`generated_token_ids`, the prompt's ids and the new ones).

Prompts are tokenized as the reference does (no special tokens added), sorted by length, left-padded
to a length bucket and a power-of-two number of rows, so a stream of prompts compiles a few
generation loops; greedy by default, sampled with `do_sample=True` (temperature, top_k, top_p
are traced values: new ones do not recompile; `seed` makes draws reproducible).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import numpy as np

from xlmr_jax.modeling import XLMRobertaForCausalLM
from xlmr_jax.pipelines.base import Feature, Pipeline


class TextGenerationPipeline(Pipeline):
    task = "text-generation"
    model_class = XLMRobertaForCausalLM
    load_kwargs: ClassVar[dict[str, Any]] = {"is_decoder": True}  # the causal mask: generation needs it
    defaults: ClassVar[dict[str, Any]] = {"max_new_tokens": 20, "do_sample": False, "temperature": 1.0,
                                          "top_k": None, "top_p": None, "seed": 0, "return_full_text": True,
                                          "return_tensors": False, "add_special_tokens": False}

    def __init__(self, model, tokenizer, **kwargs):
        if not model.config.is_decoder:
            raise ValueError("text-generation needs a decoder: load the model with is_decoder=True")
        super().__init__(model, tokenizer, **kwargs)

    def check_options(self, options):
        options = super().check_options(options)
        steps = options["max_new_tokens"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"text-generation: max_new_tokens must be an integer >= 1, got {steps!r}")
        return options

    def preprocess(self, item, index: int, options: Mapping[str, Any]) -> list[Feature]:
        if not isinstance(item, str):
            raise TypeError(f"text-generation: input {index}: the prompt must be a str, got {type(item).__name__}")
        ids = self.tokenizer.encode(item, add_special_tokens=options["add_special_tokens"])
        if not ids:
            raise ValueError(f"text-generation: prompt {index} has no token to continue: {item!r}")
        limit = self.max_length - options["max_new_tokens"]
        if len(ids) > limit:
            raise ValueError(f"text-generation: prompt {index} is {len(ids)} tokens; with max_new_tokens="
                             f"{options['max_new_tokens']} the model takes at most {limit}")
        return [Feature({"input_ids": np.asarray(ids, np.int32)}, index)]

    def static(self, options):
        """The generation settings, handed to `run` (this task's device work is `generate`, not `compute`)."""
        keys = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "seed")
        return tuple((key, options[key]) for key in keys)

    def run(self, features: list[Feature], static=None) -> list[dict[str, np.ndarray]]:
        options = dict(static)
        outputs: list[dict[str, np.ndarray] | None] = [None] * len(features)
        rng = jax.random.key(options["seed"])
        for number, indices in enumerate(self._batches(features)):
            chunk = [features[i] for i in indices]
            rows = self._rows(len(chunk))
            chunk_rows = chunk + [chunk[0]] * (rows - len(chunk))
            width = min(self.bucket(chunk[0].length), self.max_length - options["max_new_tokens"])
            ids = np.full((rows, width), self.config.pad_token_id, np.int32)
            mask = np.zeros((rows, width), np.int32)
            for row, feature in enumerate(chunk_rows):  # left padding: the prompts end together
                ids[row, width - feature.length:] = feature.arrays["input_ids"]
                mask[row, width - feature.length:] = 1
            sampling = {}
            if options["do_sample"]:
                sampling = dict(do_sample=True, temperature=options["temperature"], top_k=options["top_k"],
                                top_p=options["top_p"], rng=jax.random.fold_in(rng, number))
            generated = np.asarray(self.model.generate(ids, options["max_new_tokens"], attention_mask=mask,
                                                       **sampling))
            for row, index in enumerate(indices):
                outputs[index] = {"new_tokens": generated[row, width:]}
        return outputs

    def postprocess(self, item, features, outputs, options):
        (feature,), (output,) = features, outputs
        new_tokens = output["new_tokens"]
        stops = np.flatnonzero(new_tokens == self.config.eos_token_id)
        if stops.size:  # generate pads a row after its end of sequence; the reference stops there
            new_tokens = new_tokens[:stops[0] + 1]
        if options["return_tensors"]:
            return [{"generated_token_ids": [*feature.arrays["input_ids"].tolist(), *new_tokens.tolist()]}]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        return [{"generated_text": item + text if options["return_full_text"] else text}]
