"""sentence-embeddings: one vector per text, pooled over its real tokens from the encoder's last hidden
states (CLS, mean, max, or several concatenated), L2-normalised on request, as
`sentence_transformers.SentenceTransformer(...).encode` returns them: a float32 numpy array, (hidden,)
for one text, (n, hidden) for a list.

A sentence-transformers checkpoint sets the defaults: `modules.json` lists a Transformer (its
weights at the directory's root), a Pooling (`1_Pooling/config.json`: `pooling_mode`, or the older
`pooling_mode_cls_token` / `_mean_tokens` / `_max_tokens` flags) and maybe a Normalize;
`sentence_bert_config.json` may cap the length (`max_seq_length`), and texts are cut there, as
sentence-transformers does. Any other module (a Dense projection, ...) is refused: the vectors
would differ. Without `modules.json`: mean pooling, no normalisation, as sentence-transformers
does for a plain checkpoint. `pooling=` and `normalize=` override either. Texts go in as given:
sentence-transformers' prompts (`encode(prompt_name=...)`) are for the caller to prepend.

Pooling and normalisation run on the device: only one vector per text comes back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from xlmr_jax.modeling import XLMRobertaModel
from xlmr_jax.pipelines.base import Feature, Pipeline
from xlmr_jax.pipelines.text_inputs import encode_text

POOLINGS = ("cls", "mean", "max")
# sentence-transformers' older Pooling config: one flag per mode, concatenated in this order.
_LEGACY_FLAGS = (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                 ("pooling_mode_mean_tokens", "mean"), ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
                 ("pooling_mode_weightedmean_tokens", "weightedmean"), ("pooling_mode_lasttoken", "lasttoken"))
_NORM_EPS = 1e-12  # torch.nn.functional.normalize's


class SentenceEmbeddingsPipeline(Pipeline):
    task = "sentence-embeddings"
    model_class = XLMRobertaModel
    load_kwargs: ClassVar[dict[str, Any]] = {"add_pooling_layer": False}
    defaults: ClassVar[dict[str, Any]] = {"pooling": "mean", "normalize": False, "truncation": False,
                                          "max_length": None}

    @classmethod
    def checkpoint_options(cls, directory: str) -> dict[str, Any]:
        return sentence_transformers_options(directory)

    def check_options(self, options):
        options = super().check_options(options)
        pooling = options["pooling"]
        modes = (pooling,) if isinstance(pooling, str) else pooling
        if not isinstance(modes, list | tuple) or not modes or any(m not in POOLINGS for m in modes):
            raise ValueError(f"{self.task}: pooling must be one of {', '.join(POOLINGS)} or a list of them "
                             f"(concatenated), got {pooling!r}")
        if not isinstance(options["normalize"], bool):
            raise TypeError(f"{self.task}: normalize must be a bool, got {options['normalize']!r}")
        limit = options["max_length"]
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{self.task}: max_length must be an integer >= 1 or None, got {limit!r}")
        return {**options, "pooling": tuple(modes)}

    def __call__(self, inputs, **options):
        result = super().__call__(inputs, **options)
        if self.is_single(inputs):
            return result
        if not result:
            modes = self.check_options({**self.options, **options})["pooling"]
            return np.zeros((0, len(modes) * self.config.hidden_size), np.float32)
        return np.stack(result)

    def preprocess(self, item, index: int, options: Mapping[str, Any]) -> list[Feature]:
        ids = encode_text(self, item, index, truncation=options["truncation"])  # within what the model takes
        limit = options["max_length"]
        if limit is not None and len(ids) > limit:
            if not options["truncation"]:
                raise ValueError(f"{self.task}: input {index} is {len(ids)} tokens, more than max_length "
                                 f"{limit}; pass truncation=True to cut it")
            ids = np.asarray(self.tokenizer.encode(item, truncation=True, max_length=limit), dtype=np.int32)
        return [Feature({"input_ids": ids}, index)]

    def static(self, options):
        return options["pooling"], options["normalize"]

    def compute(self, model, batch, static):
        modes, normalize = static
        hidden = model(batch["input_ids"], batch["attention_mask"]).last_hidden_state.astype(jnp.float32)
        mask = batch["attention_mask"][..., None] > 0
        pooled = []
        for mode in modes:
            if mode == "cls":
                pooled.append(hidden[:, 0])
            elif mode == "max":
                pooled.append(jnp.where(mask, hidden, -jnp.inf).max(axis=1))
            else:
                count = jnp.maximum(mask.sum(axis=1).astype(jnp.float32), 1e-9)
                pooled.append(jnp.where(mask, hidden, 0.0).sum(axis=1) / count)
        vectors = jnp.concatenate(pooled, axis=-1)
        if normalize:
            vectors = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), _NORM_EPS)
        return {"embedding": vectors}

    def postprocess(self, item, features, outputs, options):
        (output,) = outputs
        return np.asarray(output["embedding"], dtype=np.float32)


def sentence_transformers_options(directory: str) -> dict[str, Any]:
    """Options that a sentence-transformers checkpoint's module files set (none for a plain checkpoint)."""
    modules_path = os.path.join(directory, "modules.json")
    if not os.path.exists(modules_path):
        return {}
    modules = _read_json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str)
                                                for m in modules):
        raise ValueError(f"{modules_path}: expected a list of modules, each with a \"type\"")
    options: dict[str, Any] = {"normalize": False, "truncation": True}  # sentence-transformers always truncates
    for module in modules:
        kind, where = module["type"].rsplit(".", 1)[-1], module.get("path") or ""
        if not module["type"].startswith("sentence_transformers."):
            kind = module["type"]  # a custom module: refused below
        if kind == "Transformer":
            if os.path.normpath(where) != ".":
                raise ValueError(f"{modules_path}: the Transformer's weights are in {where!r}; this pipeline "
                                 "reads them at the checkpoint's root (sentence-transformers' current layout)")
        elif kind == "Pooling":
            options["pooling"] = _pooling_modes(os.path.join(directory, where, "config.json"))
        elif kind == "Normalize":
            options["normalize"] = True
        else:
            raise ValueError(f"{modules_path}: the module {module['type']} is not one this pipeline runs "
                             "(Transformer, Pooling, Normalize); its embeddings would differ from "
                             "sentence-transformers'")
    if "pooling" not in options:
        raise ValueError(f"{modules_path}: no Pooling module; a sentence embedding needs one")
    bert_config_path = os.path.join(directory, "sentence_bert_config.json")
    if os.path.exists(bert_config_path):
        bert_config = _read_json(bert_config_path)
        bert_config = bert_config if isinstance(bert_config, dict) else {}
        if bert_config.get("do_lower_case"):
            raise ValueError(f"{bert_config_path}: do_lower_case is true; this pipeline does not lowercase "
                             "texts (lowercase them yourself and drop the flag)")
        if bert_config.get("max_seq_length") is not None:
            options["max_length"] = bert_config["max_seq_length"]
    return options


def _pooling_modes(path: str) -> tuple[str, ...]:
    config = _read_json(path)
    mode = config.get("pooling_mode")
    if mode is None:  # the older layout: one flag per mode; none set means mean
        modes = tuple(name for flag, name in _LEGACY_FLAGS if config.get(flag)) or ("mean",)
    else:
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    unsupported = [m for m in modes if m not in POOLINGS]
    if unsupported:
        raise ValueError(f"{path}: pooling {', '.join(map(str, unsupported))} is not supported; this pipeline "
                         f"pools {', '.join(POOLINGS)}")
    return modes


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found (named by the checkpoint's modules.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read it as JSON ({err})") from None
