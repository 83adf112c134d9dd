"""What every task turns records into: a `FeatureSet` of model-input arrays, and the label map that
gives class names their ids."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from xlmr_jax.finetune.records import DataError, UnseenLabelError, where
from xlmr_jax.training.masking import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "FeatureSet", "LabelMap", "check_max_length", "token_lengths"]


@dataclasses.dataclass
class FeatureSet:
    """The model's keyword arguments for every feature, plus what batching and evaluation need."""

    arrays: dict[str, np.ndarray]     # leading axis = feature; sequence arrays padded on their LAST axis
    sequence_keys: tuple[str, ...]    # keys whose last axis is the token axis (sliced to a bucket width)
    pad_values: dict[str, int]        # pad value of each sequence key
    lengths: np.ndarray               # (N,) real tokens per feature (multiple choice: the longest choice)
    example_index: np.ndarray         # (N,) the record each feature came from
    meta: Any = None                  # task-specific data the evaluation needs (QA windows, word ids)

    def __post_init__(self):
        n = len(self.lengths)
        for name, array in self.arrays.items():
            if array.shape[0] != n:
                raise ValueError(f"FeatureSet: {name} has {array.shape[0]} rows, lengths has {n}")
        widths = {self.arrays[key].shape[-1] for key in self.sequence_keys}
        if len(widths) > 1:
            raise ValueError(f"FeatureSet: sequence arrays differ in width {sorted(widths)}")
        if set(self.pad_values) != set(self.sequence_keys):
            raise ValueError("FeatureSet: pad_values must name exactly the sequence keys")
        if self.example_index.shape != (n,):
            raise ValueError(f"FeatureSet: example_index has shape {self.example_index.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def max_length(self) -> int:
        return self.arrays[self.sequence_keys[0]].shape[-1]


def token_lengths(attention_mask: np.ndarray) -> np.ndarray:
    return attention_mask.sum(axis=-1).astype(np.int32)


def check_max_length(task: str, max_length: int, tokenizer, least: int) -> None:
    if max_length < least:
        raise ValueError(f"{task}: max_length={max_length} is too short; it needs at least {least} tokens")
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and max_length > limit:
        raise ValueError(f"{task}: max_length={max_length} is more than the tokenizer's model_max_length={limit}")


def _key(value) -> tuple[str, Any]:
    # True == 1 in a dict: keep bools and ints apart
    return type(value).__name__, value


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """Label values <-> class ids. Fitted on the training labels: sorted, except integer labels that
    are already 0..K-1, which keep their values as ids; with `names` (the id -> name list of
    integer-coded data, e.g. a dataset's ClassLabel names) names and ids are fixed by it."""

    names: tuple[str, ...]   # id -> name (config.json's id2label)
    values: tuple            # id -> the label as the training data writes it
    _ids: dict

    @classmethod
    def fit(cls, values: Iterable, *, names: Sequence[str] | None = None, what: str = "labels") -> LabelMap:
        if names is not None:
            ids = {_key(name): i for i, name in enumerate(names)}
            ids.update({_key(i): i for i in range(len(names))})
            return cls(tuple(names), tuple(names), ids)
        unique = {_key(value): value for value in values}
        if not unique:
            raise DataError(f"no {what} in the training data")
        kinds = sorted({kind for kind, _ in unique})
        bad = [kind for kind in kinds if kind not in ("str", "int", "bool")]
        if bad or len(kinds) > 1:
            examples = ", ".join(repr(next(v for (k, _), v in unique.items() if k == kind)) for kind in kinds)
            raise DataError(f"{what} must all be text or all integers (or all true/false); found {examples}")
        ordered = sorted(unique.values())  # integers 0..K-1 therefore keep their values as ids
        return cls(tuple(str(value) for value in ordered), tuple(ordered),
                   {_key(value): i for i, value in enumerate(ordered)})

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, value) -> bool:
        return _key(value) in self._ids

    def id(self, value) -> int:
        return self._ids[_key(value)]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def config(self) -> dict[str, Any]:
        return {"num_labels": len(self.names), "id2label": self.id2label, "label2id": self.label2id}

    def check(self, records: Sequence[dict], index: int, value, split: str, what: str = "label") -> None:
        """Raise `UnseenLabelError` unless `value` (of record `index`) is one of the training labels."""
        if value not in self:
            shown = ", ".join(map(repr, self.values[:20])) + (", ..." if len(self.values) > 20 else "")
            raise UnseenLabelError(f"{split} data, {where(records, index)}: {what} {value!r} does not occur in "
                                   f"the training data (training {what}s: {shown})")
