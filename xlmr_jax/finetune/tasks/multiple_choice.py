"""multiple-choice (the reference's run_swag.py): a context and K endings -> the right ending.

Columns: `sent1` (the context), optional `sent2` (the start of every ending), `ending0` ..
`ending{K-1}` (K, the number of choices, is read from the training records: every record has the
same endings), `label` (0..K-1). Choice i is the pair (`sent1`, `sent2 + " " + ending_i`), truncated
longest-first as run_swag does; arrays are (N, K, max_length).
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping, Sequence
from typing import ClassVar

import numpy as np

from xlmr_jax.finetune.features import FeatureSet, check_max_length
from xlmr_jax.finetune.records import DataError, UnseenLabelError, text_column, where
from xlmr_jax.finetune.tasks import Split, TaskBase

_ENDING = re.compile(r"ending(\d+)")


class MultipleChoiceTask(TaskBase):
    name = "multiple-choice"
    model_class_name = "XLMRobertaForMultipleChoice"
    default_columns: ClassVar[dict[str, str]] = {"sent1": "sent1", "sent2": "sent2", "label": "label",
                       **{f"ending{i}": f"ending{i}" for i in range(4)}}
    required_columns = ("sent1", "ending0", "ending1", "label")

    def __init__(self, options=None):
        super().__init__(options)
        self.num_choices: int | None = None

    def known_columns(self) -> Container[str]:
        return _MultipleChoiceColumns()

    def fit_labels(self, train_records: Sequence[dict]) -> None:
        first = train_records[0]
        self.num_choices = next(i for i in range(len(first) + 1) if f"ending{i}" not in first)
        self.check_labels(train_records, "train")

    def check_labels(self, records: Sequence[dict], split: Split) -> None:
        if self.num_choices is None:
            raise RuntimeError(f"{self.name}: call fit_labels(train_records) first")
        for index, record in enumerate(records):
            endings = sorted(int(m.group(1)) for m in map(_ENDING.fullmatch, record) if m)
            if endings != list(range(self.num_choices)):
                raise DataError(f"{split} data, {where(records, index)}: the training data has {self.num_choices} "
                                f"endings (ending0..ending{self.num_choices - 1}), this record has "
                                f"{', '.join(f'ending{i}' for i in endings)}")
            label = record["label"]
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < self.num_choices:
                raise UnseenLabelError(f"{split} data, {where(records, index)}: label {label!r} is not the index of "
                                       f"an ending (0..{self.num_choices - 1})")

    def features(self, records: Sequence[dict], tokenizer, split: Split) -> FeatureSet:
        self.check_labels(records, split)
        check_max_length(self.name, self.options.max_length, tokenizer, 4)
        n, k, width = len(records), self.num_choices, self.options.max_length
        contexts = text_column(records, "sent1")
        headers = text_column(records, "sent2", optional=True)
        endings = [text_column(records, f"ending{i}") for i in range(k)]
        first = [context for context in contexts for _ in range(k)]
        if headers is None:
            second = [endings[i][row] for row in range(n) for i in range(k)]
        else:
            second = [f"{headers[row]} {endings[i][row]}" for row in range(n) for i in range(k)]
        encoded = tokenizer(first, second, truncation=True, max_length=width, padding="max_length")
        input_ids = encoded["input_ids"].astype(np.int32).reshape(n, k, width)
        mask = encoded["attention_mask"].astype(np.int32).reshape(n, k, width)
        labels = np.asarray([record["label"] for record in records], dtype=np.int32)
        return FeatureSet({"input_ids": input_ids, "attention_mask": mask, "labels": labels},
                          ("input_ids", "attention_mask"), {"input_ids": tokenizer.pad_token_id, "attention_mask": 0},
                          mask.sum(-1).max(-1).astype(np.int32), np.arange(n, dtype=np.int32))

    def evaluate(self, feature_set: FeatureSet, outputs: Mapping[str, np.ndarray],
                 records: Sequence[dict]) -> dict[str, float]:
        from xlmr_jax.finetune import metrics

        logits = np.asarray(outputs["logits"], dtype=np.float32)
        return metrics.classification_metrics(logits.argmax(-1), feature_set.arrays["labels"])


class _MultipleChoiceColumns:
    """sent1, sent2, label and any endingN."""

    def __contains__(self, name: object) -> bool:
        return name in ("sent1", "sent2", "label") or (isinstance(name, str) and bool(_ENDING.fullmatch(name)))
