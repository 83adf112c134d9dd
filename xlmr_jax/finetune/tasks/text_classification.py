"""text-classification (the reference's run_glue.py / run_classification.py): a sentence or a pair
-> one class, several classes (multi-label), or a number (regression).

Columns: `sentence1` (or `text` / `sentence`), optional `sentence2`, `label`. The problem type is
`problem_type`, or read from the training labels: numbers with a fraction (floats) -> regression,
lists (the names or ids of the classes that apply) -> multi-label, else single-label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, ClassVar

import numpy as np

from xlmr_jax.finetune.features import FeatureSet, LabelMap, check_max_length, token_lengths
from xlmr_jax.finetune.records import DataError, text_column, where
from xlmr_jax.finetune.tasks import Split, TaskBase

SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"


class TextClassificationTask(TaskBase):
    name = "text-classification"
    model_class_name = "XLMRobertaForSequenceClassification"
    default_columns: ClassVar[dict[str, str]] = {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label",
                       "text": "sentence1", "sentence": "sentence1"}
    required_columns = ("sentence1", "label")

    def __init__(self, options=None):
        super().__init__(options)
        self.problem_type: str | None = None
        self.labels: LabelMap | None = None  # None for regression

    def fit_labels(self, train_records: Sequence[dict]) -> None:
        values = [record["label"] for record in train_records]
        problem = self.options.problem_type or _inferred_problem_type(values)
        self._check_kinds(train_records, "train", problem)
        self.problem_type = problem
        if problem == SINGLE:
            self.labels = LabelMap.fit(values, names=self.options.label_names)
        elif problem == MULTI:
            self.labels = LabelMap.fit(chain.from_iterable(values), names=self.options.label_names)
        self.check_labels(train_records, "train")

    def check_labels(self, records: Sequence[dict], split: Split) -> None:
        self._require_fitted()
        self._check_kinds(records, split, self.problem_type)
        if self.labels is None:
            return
        for index, record in enumerate(records):
            label = record["label"]
            for value in label if self.problem_type == MULTI else (label,):
                self.labels.check(records, index, value, split)

    def model_config(self) -> dict[str, Any]:
        self._require_fitted()
        if self.labels is None:
            return {"num_labels": 1, "id2label": {0: "LABEL_0"}, "label2id": {"LABEL_0": 0},
                    "problem_type": REGRESSION}
        return {**self.labels.config(), "problem_type": self.problem_type}

    def features(self, records: Sequence[dict], tokenizer, split: Split) -> FeatureSet:
        self.check_labels(records, split)
        check_max_length(self.name, self.options.max_length, tokenizer, 4)
        first = text_column(records, "sentence1")
        second = text_column(records, "sentence2", optional=True)
        encoded = tokenizer(first, second, truncation=True, max_length=self.options.max_length,
                            padding="max_length")
        mask = encoded["attention_mask"].astype(np.int32)
        arrays = {"input_ids": encoded["input_ids"].astype(np.int32), "attention_mask": mask,
                  "labels": self._label_array(records)}
        return FeatureSet(arrays, ("input_ids", "attention_mask"),
                          {"input_ids": tokenizer.pad_token_id, "attention_mask": 0},
                          token_lengths(mask), np.arange(len(records), dtype=np.int32))

    def evaluate(self, feature_set: FeatureSet, outputs: Mapping[str, np.ndarray],
                 records: Sequence[dict]) -> dict[str, float]:
        from xlmr_jax.finetune import metrics

        logits = np.asarray(outputs["logits"], dtype=np.float32).reshape(len(feature_set), -1)
        labels = feature_set.arrays["labels"]
        if self.problem_type == REGRESSION:
            return metrics.regression_metrics(logits[:, 0], labels)
        if self.problem_type == MULTI:
            return metrics.multilabel_metrics(logits > 0, labels > 0.5)  # sigmoid(logit) > 0.5
        return metrics.classification_metrics(logits.argmax(-1), labels)

    # -- helpers ---------------------------------------------------------------------------------------

    def _require_fitted(self) -> None:
        if self.problem_type is None:
            raise RuntimeError(f"{self.name}: call fit_labels(train_records) first")

    def _label_array(self, records: Sequence[dict]) -> np.ndarray:
        labels = [record["label"] for record in records]
        if self.problem_type == REGRESSION:
            return np.asarray(labels, dtype=np.float32)
        if self.problem_type == MULTI:
            hot = np.zeros((len(records), len(self.labels)), dtype=np.float32)
            for row, label in enumerate(labels):
                hot[row, [self.labels.id(value) for value in label]] = 1.0
            return hot
        return np.asarray([self.labels.id(label) for label in labels], dtype=np.int32)

    def _check_kinds(self, records: Sequence[dict], split: Split, problem: str) -> None:
        """Every label is what the problem type takes: a class (text, integer, true/false), a list of
        them, or a finite number."""
        for index, record in enumerate(records):
            label = record.get("label")
            if problem == REGRESSION:
                ok = _is_number(label) and np.isfinite(label)
                expected = "a finite number (regression)"
            elif problem == MULTI:
                ok = isinstance(label, list) and all(_is_class(value) for value in label)
                expected = "a list of class names or ids (multi-label)"
            else:
                ok = _is_class(label)
                expected = "a class name or integer id (single-label)"
            if not ok:
                raise DataError(f"{split} data, {where(records, index)}: label must be {expected}, got "
                                f"{type(label).__name__} {label!r:.60}")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_class(value) -> bool:
    return (isinstance(value, str) and value != "") or isinstance(value, int)  # bool is an int


def _inferred_problem_type(values: list) -> str:
    if any(isinstance(value, list) for value in values):
        return MULTI
    if any(isinstance(value, float) for value in values):
        return REGRESSION
    return SINGLE
