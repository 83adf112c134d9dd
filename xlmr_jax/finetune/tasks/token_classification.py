"""token-classification (the reference's run_ner.py): a tag per word (NER, POS).

Columns: `tokens` (the words) and `ner_tags` (one tag per word). Each word is tokenized on its own
as a word preceded by a space, so every word begins with "▁": the reference's `is_split_into_words`
for XLM-R. The first sub-token of a word carries its tag, the others -100 (ignored); with
`label_all_tokens` they carry it too, a B- tag becoming its I- tag, as run_ner does.

Truncation: a sentence is cut after its first `max_length - 2` sub-tokens (the reference's
`truncation=True`); the words past the cut are not trained on and, as in run_ner, are left out of
both the true and the predicted tags when evaluating (a warning says how many sentences lose words).
`FeatureSet.meta` is the word index of every token, (N, max_length) int32, -1 at `<s>`, `</s>` and
padding, so predictions map back to words.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, ClassVar

import numpy as np

from xlmr_jax.finetune.features import IGNORE_INDEX, FeatureSet, LabelMap, check_max_length
from xlmr_jax.finetune.records import DataError, where
from xlmr_jax.finetune.tasks import Split, TaskBase

logger = logging.getLogger("xlmr_jax")


class TokenClassificationTask(TaskBase):
    name = "token-classification"
    model_class_name = "XLMRobertaForTokenClassification"
    default_columns: ClassVar[dict[str, str]] = {"tokens": "tokens", "ner_tags": "ner_tags"}
    required_columns = ("tokens", "ner_tags")

    def __init__(self, options=None):
        super().__init__(options)
        self.labels: LabelMap | None = None

    def fit_labels(self, train_records: Sequence[dict]) -> None:
        _check_sentences(train_records, "train")
        tags = chain.from_iterable(record["ner_tags"] for record in train_records)
        self.labels = LabelMap.fit(tags, names=self.options.label_names, what="tags")
        self.check_labels(train_records, "train")

    def check_labels(self, records: Sequence[dict], split: Split) -> None:
        labels = self._fitted()
        _check_sentences(records, split)
        for index, record in enumerate(records):
            for tag in record["ner_tags"]:
                labels.check(records, index, tag, split, what="tag")

    def model_config(self) -> dict[str, Any]:
        return self._fitted().config()

    def features(self, records: Sequence[dict], tokenizer, split: Split) -> FeatureSet:
        self.check_labels(records, split)
        check_max_length(self.name, self.options.max_length, tokenizer, 3)
        n, width = len(records), self.options.max_length
        words_per_record = np.array([len(record["tokens"]) for record in records], dtype=np.int64)
        words = list(chain.from_iterable(record["tokens"] for record in records))
        # one tokenizer call for every word of every sentence
        pieces = tokenizer(words, add_special_tokens=False, return_tensors=None,
                           return_attention_mask=False)["input_ids"] if words else []
        word_tokens = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        flat_ids = np.fromiter(chain.from_iterable(pieces), dtype=np.int32, count=int(word_tokens.sum()))
        word_record = np.repeat(np.arange(n), words_per_record)
        word_in_record = np.arange(len(words)) - (np.cumsum(words_per_record) - words_per_record)[word_record]
        tag_of_word = np.array([self.labels.id(tag) for tag in chain.from_iterable(r["ner_tags"] for r in records)],
                               dtype=np.int32)

        token_word = np.repeat(np.arange(len(words)), word_tokens)
        token_record = word_record[token_word]
        record_tokens = np.bincount(token_record, minlength=n)
        position = np.arange(len(token_word)) - (np.cumsum(record_tokens) - record_tokens)[token_record] + 1
        kept = position <= width - 2
        starts_word = np.ones(len(token_word), dtype=bool)
        starts_word[1:] = token_word[1:] != token_word[:-1]
        token_tag = tag_of_word[token_word]
        later = self._continuation_ids()[token_tag] if self.options.label_all_tokens else IGNORE_INDEX
        token_label = np.where(starts_word, token_tag, later)

        rows, columns = token_record[kept], position[kept]
        lengths = (np.minimum(record_tokens, width - 2) + 2).astype(np.int32)
        input_ids = np.full((n, width), tokenizer.pad_token_id, dtype=np.int32)
        input_ids[:, 0] = tokenizer.bos_token_id
        input_ids[rows, columns] = flat_ids[kept]
        input_ids[np.arange(n), lengths - 1] = tokenizer.eos_token_id
        labels = np.full((n, width), IGNORE_INDEX, dtype=np.int32)
        labels[rows, columns] = token_label[kept]
        word_ids = np.full((n, width), -1, dtype=np.int32)
        word_ids[rows, columns] = word_in_record[token_word[kept]]
        attention_mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)

        truncated = int(np.count_nonzero(record_tokens > width - 2))
        if truncated:
            logger.warning("%s: %d of %d %s sentences have more than max_length - 2 = %d sub-tokens; their "
                           "last words are cut off (not trained on, not evaluated)", self.name, truncated, n,
                           split, width - 2)
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        return FeatureSet(arrays, ("input_ids", "attention_mask", "labels"),
                          {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX},
                          lengths, np.arange(n, dtype=np.int32), meta=word_ids)

    def evaluate(self, feature_set: FeatureSet, outputs: Mapping[str, np.ndarray],
                 records: Sequence[dict]) -> dict[str, float]:
        """seqeval over the words that have a token (each word's tag is its first sub-token's)."""
        from xlmr_jax.finetune import metrics

        names = self._fitted().names
        logits = np.asarray(outputs["logits"])
        width = logits.shape[1]
        if width < feature_set.lengths.max(initial=0):
            raise ValueError(f"{self.name}: logits are {width} tokens wide, shorter than the longest feature "
                             f"({feature_set.lengths.max()} tokens)")
        word_ids = feature_set.meta[:, :width]
        predicted = logits.argmax(-1)
        starts_word = word_ids >= 0
        starts_word[:, 1:] &= word_ids[:, 1:] != word_ids[:, :-1]
        true_tags, predicted_tags = [], []
        for row, record_index in enumerate(feature_set.example_index.tolist()):
            tags = records[record_index]["ner_tags"]
            columns = np.flatnonzero(starts_word[row])
            true_tags.append([names[self.labels.id(tags[word])] for word in word_ids[row, columns].tolist()])
            predicted_tags.append([names[label] for label in predicted[row, columns].tolist()])
        return metrics.entity_metrics(true_tags, predicted_tags)

    # -- helpers ---------------------------------------------------------------------------------------

    def _fitted(self) -> LabelMap:
        if self.labels is None:
            raise RuntimeError(f"{self.name}: call fit_labels(train_records) first")
        return self.labels

    def _continuation_ids(self) -> np.ndarray:
        """The id each tag's later sub-tokens get: B-X -> I-X when I-X is a tag, else the tag itself."""
        names = self.labels.names
        index = {name: i for i, name in enumerate(names)}
        return np.array([index.get("I-" + name[2:], i) if name.startswith("B-") else i
                         for i, name in enumerate(names)], dtype=np.int32)


def _check_sentences(records: Sequence[dict], split: Split) -> None:
    for index, record in enumerate(records):
        words, tags = record.get("tokens"), record.get("ner_tags")
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise DataError(f"{split} data, {where(records, index)}: 'tokens' must be a list of words (strings), "
                            f"got {words!r:.80}")
        if not isinstance(tags, list) or not all(isinstance(tag, str | int) for tag in tags):
            raise DataError(f"{split} data, {where(records, index)}: 'ner_tags' must be a list of tags (names or "
                            f"integer ids), got {tags!r:.80}")
        if len(words) != len(tags):
            raise DataError(f"{split} data, {where(records, index)}: {len(words)} tokens but {len(tags)} ner_tags")
