"""token-classification (alias "ner"): a label per token, or entities grouped from them, as
`transformers.pipeline("token-classification")` returns them.

`aggregation_strategy`:
- "none": one dict per token whose label is not ignored: entity, score, index, word (the token
  string, e.g. "▁Paris"), start, end (character offsets into the text);
- "simple": adjacent tokens with the same tag (B-X starts a new entity, I-X and a bare X continue
  one) become one entity_group, its score the mean of theirs;
- "first" / "average" / "max": each word (a token not preceded by a space in the text starts no
  new word: the reference's rule for tokenizers without word ids, XLM-R's included) gets one label
  (of its first token / of its averaged scores / of its most confident token), then "simple".

Text longer than the model takes is truncated, as the reference does; with `stride` it is cut into
overlapping windows instead, and entities found in several are kept once (the longest, then the
most confident), as the reference does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from xlmr_jax.modeling import XLMRobertaForTokenClassification
from xlmr_jax.pipelines.base import Feature, Pipeline
from xlmr_jax.tokenization.vocab import META_SPACE

AGGREGATION_STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassificationPipeline(Pipeline):
    task = "token-classification"
    model_class = XLMRobertaForTokenClassification
    defaults: ClassVar[dict[str, Any]] = {"aggregation_strategy": "none", "ignore_labels": ("O",), "stride": None}

    def check_options(self, options):
        options = super().check_options(options)
        strategy = options["aggregation_strategy"]
        # str(...) of the reference's AggregationStrategy members (a str enum) is their value
        name = strategy.value if hasattr(strategy, "value") else strategy
        if not isinstance(name, str) or name.lower() not in AGGREGATION_STRATEGIES:
            raise ValueError(f"{self.task}: aggregation_strategy must be one of {', '.join(AGGREGATION_STRATEGIES)}; "
                             f"got {strategy!r}")
        labels = options["ignore_labels"]
        if isinstance(labels, str) or not isinstance(labels, Sequence | set | frozenset) \
                or not all(isinstance(label, str) for label in labels):
            raise ValueError(f"{self.task}: ignore_labels must be a list of label names, got {labels!r}")
        stride = options["stride"]
        if stride is not None:
            if isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
                raise ValueError(f"{self.task}: stride must be an integer >= 0 or None, got {stride!r}")
            if stride >= self.max_length - 2:
                raise ValueError(f"{self.task}: stride={stride} must be smaller than the {self.max_length - 2} "
                                 f"text tokens of a window (the model's {self.max_length}, less <s> and </s>)")
            if name.lower() == "none":
                raise ValueError(f"{self.task}: stride needs an aggregation_strategy other than 'none' (entities "
                                 f"found in overlapping windows are merged); got aggregation_strategy='none'")
        return {**options, "aggregation_strategy": name.lower(), "ignore_labels": tuple(labels)}

    def preprocess(self, item, index: int, options: Mapping[str, Any]) -> list[Feature]:
        if not isinstance(item, str):
            raise TypeError(f"{self.task}: input {index}: the text must be a str, got {type(item).__name__}")
        stride = options["stride"]
        encoding = self.tokenizer(
            [item], truncation=True, max_length=self.max_length, stride=stride or 0,
            return_overflowing_tokens=stride is not None, return_offsets_mapping=True,
            return_special_tokens_mask=True, return_attention_mask=False, return_tensors=None,
        )
        features = []
        for ids, offsets, special in zip(encoding["input_ids"], encoding["offset_mapping"],
                                         encoding["special_tokens_mask"], strict=True):
            ids = np.asarray(ids, dtype=np.int32)
            window = (ids, np.asarray(offsets, dtype=np.int64).reshape(-1, 2), np.asarray(special, dtype=bool))
            features.append(Feature({"input_ids": ids}, index, meta=window))
        return features

    def compute(self, model, batch, static):
        logits = model(batch["input_ids"], batch["attention_mask"]).logits
        return {"scores": jax.nn.softmax(logits.astype(jnp.float32), axis=-1)}

    def postprocess(self, item, features, outputs, options):
        strategy, ignored = options["aggregation_strategy"], set(options["ignore_labels"])
        entities = []
        for feature, output in zip(features, outputs, strict=True):
            ids, offsets, special = feature.meta
            tokens = self._tokens(item, ids, offsets, special, output["scores"][:len(ids)])
            if strategy in ("none", "simple"):
                found = [self._token_entity(token) for token in tokens]
            else:
                found = [self._word_entity(word, strategy) for word in _words(tokens)]
            if strategy != "none":
                found = group_entities(found, self._tokens_to_string)
            entities += [e for e in found if e.get("entity", e.get("entity_group")) not in ignored]
        return merge_overlapping(entities) if len(features) > 1 else entities

    # -- helpers ---------------------------------------------------------------------------------------

    def _tokens(self, text: str, ids, offsets, special, scores) -> list[dict]:
        """Every non-special token: its string, scores, place in the window and in the text, and whether
        it continues the word before it."""
        strings = self.tokenizer.convert_ids_to_tokens(ids.tolist())
        tokens = []
        for index in np.flatnonzero(~special).tolist():
            start, end = (int(x) for x in offsets[index])
            word, continues = strings[index], start > 0 and " " not in text[start - 1:start + 1]
            if ids[index] == self.tokenizer.unk_token_id:  # the text under it says more than "<unk>"
                word, continues = text[start:end], False
            tokens.append({"word": word, "scores": scores[index], "start": start, "end": end, "index": index,
                           "continues": continues})
        return tokens

    def _label(self, label_id) -> str:
        return self.config.id2label[int(label_id)] if self.config.id2label else f"LABEL_{int(label_id)}"

    def _token_entity(self, token: dict) -> dict:
        best = int(np.argmax(token["scores"]))
        return {"entity": self._label(best), "score": float(token["scores"][best]), "index": token["index"],
                "word": token["word"], "start": token["start"], "end": token["end"]}

    def _word_entity(self, word: list[dict], strategy: str) -> dict:
        if strategy == "first":
            scores = word[0]["scores"]
        elif strategy == "max":
            scores = max(word, key=lambda token: token["scores"].max())["scores"]
        else:  # average
            scores = np.mean(np.stack([token["scores"] for token in word]).astype(np.float64), axis=0)
        best = int(np.argmax(scores))
        return {"entity": self._label(best), "score": float(scores[best]),
                "word": self._tokens_to_string([token["word"] for token in word]),
                "start": word[0]["start"], "end": word[-1]["end"]}

    @staticmethod
    def _tokens_to_string(tokens: list[str]) -> str:
        """Token strings as text the way the reference joins them: "▁" is a space, except in the first
        token, where it is dropped."""
        if not tokens:
            return ""
        return tokens[0].replace(META_SPACE, "") + "".join(tokens[1:]).replace(META_SPACE, " ")


def _words(tokens: list[dict]) -> list[list[dict]]:
    words: list[list[dict]] = []
    for token in tokens:
        if words and token["continues"]:
            words[-1].append(token)
        else:
            words.append([token])
    return words


def _tag(label: str) -> tuple[str, str]:
    """("B" | "I", entity type) of a label; a label without a B-/I- prefix continues its type."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def group_entities(entities: list[dict], tokens_to_string) -> list[dict]:
    """Adjacent entities of one type, each B- starting a new group, as entity groups."""
    groups: list[list[dict]] = []
    for entity in entities:
        if groups:
            bi, tag = _tag(entity["entity"])
            if bi != "B" and tag == _tag(groups[-1][-1]["entity"])[1]:
                groups[-1].append(entity)
                continue
        groups.append([entity])
    return [{"entity_group": group[0]["entity"].split("-", 1)[-1],
             "score": float(np.mean([entity["score"] for entity in group])),
             "word": tokens_to_string([entity["word"] for entity in group]),
             "start": group[0]["start"], "end": group[-1]["end"]} for group in groups]


def merge_overlapping(entities: list[dict]) -> list[dict]:
    """Entities of overlapping windows, each overlap kept once: the longer, then the more confident."""
    kept: list[dict] = []
    for entity in sorted(entities, key=lambda e: e["start"]):
        previous = kept[-1] if kept else None
        if previous is not None and previous["start"] <= entity["start"] < previous["end"]:
            length, previous_length = entity["end"] - entity["start"], previous["end"] - previous["start"]
            if length > previous_length or (length == previous_length and entity["score"] > previous["score"]):
                kept[-1] = entity
        else:
            kept.append(entity)
    return kept
