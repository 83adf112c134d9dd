"""Fine-tuning tasks: one file each, all with the `Task` interface the loop calls.

A task reads its records (`read`), fits its label maps on the training records (`fit_labels`),
checks other splits against them (`check_labels`), says what config.json needs (`model_config`),
turns records into model inputs (`features`) and model outputs back into metrics (`evaluate`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Container, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from xlmr_jax.finetune.features import FeatureSet
from xlmr_jax.finetune.records import Records, merge_columns, read_records

Split = Literal["train", "validation"]
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """The options that shape a task's features (each task reads the ones it needs)."""

    max_length: int = 128                 # tokens per row, <s> and </s> included
    problem_type: str | None = None       # text-classification; None: from the training labels
    label_all_tokens: bool = False        # token-classification: label every sub-token, not the first only
    label_names: tuple[str, ...] | None = None  # class names of integer-coded labels (id -> name)
    doc_stride: int = 128                 # question-answering: tokens shared by consecutive windows
    max_answer_length: int = 30           # question-answering: longest answer, in tokens
    version_2_with_negative: bool = False  # question-answering: questions may have no answer
    null_score_diff_threshold: float = 0.0  # question-answering v2: predict "" when null beats best by more
    pack: bool = True                     # masked-lm / causal-lm: full rows of lines joined by </s>
    mlm_probability: float = 0.15         # masked-lm: share of tokens masked

    def __post_init__(self):
        problems = []
        if isinstance(self.label_names, str):
            problems.append(f"label_names must be a list of class names, got the string {self.label_names!r}")
        elif self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(self.label_names))
        for name, least in (("max_length", 4), ("doc_stride", 0), ("max_answer_length", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
                problems.append(f"{name} must be an integer >= {least}, got {value!r}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            problems.append(f"problem_type must be one of {', '.join(PROBLEM_TYPES)} or None, got {self.problem_type!r}")
        for name in ("label_all_tokens", "version_2_with_negative", "pack"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.mlm_probability, int | float) or not 0 < self.mlm_probability < 1:
            problems.append(f"mlm_probability must be in (0, 1), got {self.mlm_probability!r}")
        threshold = self.null_score_diff_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or np.isnan(threshold):
            problems.append(f"null_score_diff_threshold must be a number, got {threshold!r}")
        names = self.label_names
        if isinstance(names, tuple) and (not names or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names)):
            problems.append(f"label_names must be distinct strings, got {list(names)!r}")
        if problems:
            raise ValueError("task options: " + "; ".join(problems))

    @classmethod
    def of(cls, options: TaskOptions | Mapping[str, Any] | Any | None) -> TaskOptions:
        """Options from a TaskOptions, a dict of its fields, or any object with such attributes (a
        `FinetuneConfig`: the fields it has are read, the others keep their defaults)."""
        if options is None or isinstance(options, cls):
            return options or cls()
        names = [field.name for field in dataclasses.fields(cls)]
        if isinstance(options, Mapping):
            unknown = sorted(set(options) - set(names))
            if unknown:
                raise TypeError(f"unknown task option(s) {unknown}; the options are {', '.join(names)}")
            return cls(**options)
        return cls(**{name: getattr(options, name) for name in names if hasattr(options, name)})


class Task(Protocol):
    """The interface every task implements (the loop depends only on this)."""

    name: ClassVar[str]                        # "text-classification", ...
    model_class_name: ClassVar[str]            # the xlmr_jax class it trains
    default_columns: ClassVar[Mapping[str, str]]  # file column -> ours, the reference scripts' names
    required_columns: ClassVar[tuple[str, ...]]   # ours, needed in train and validation records
    output_names: ClassVar[tuple[str, ...]]    # model outputs `evaluate` reads ("logits", ...)
    options: TaskOptions

    def __init__(self, options: TaskOptions | Mapping[str, Any] | Any | None = None) -> None: ...

    def read(self, path: str | os.PathLike, columns: Mapping[str, str] | None = None) -> Records:
        """`read_records` with the task's default column names, `columns` (yours -> ours) on top."""

    def fit_labels(self, train_records: Sequence[dict]) -> None:
        """Build the label maps (and problem type) from the training records."""

    def check_labels(self, records: Sequence[dict], split: Split) -> None:
        """Raise a DataError for a label of `records` that the label maps do not know or cannot take."""

    def model_config(self) -> dict[str, Any]:
        """config.json overrides (num_labels, id2label {int: str}, label2id, problem_type, is_decoder)."""

    def features(self, records: Sequence[dict], tokenizer, split: Split) -> FeatureSet:
        """The records as model inputs (call `fit_labels` first)."""

    def evaluate(self, feature_set: FeatureSet, outputs: Mapping[str, np.ndarray],
                 records: Sequence[dict]) -> dict[str, float]:
        """Metrics from the model's `output_names` over every feature of `feature_set`, in order."""


class TaskBase:
    """What most tasks share: options, reading with the task's column names, no labels to fit."""

    name: ClassVar[str]
    model_class_name: ClassVar[str]
    default_columns: ClassVar[Mapping[str, str]]
    required_columns: ClassVar[tuple[str, ...]]
    output_names: ClassVar[tuple[str, ...]] = ("logits",)

    def __init__(self, options: TaskOptions | Mapping[str, Any] | Any | None = None) -> None:
        self.options = TaskOptions.of(options)

    def known_columns(self) -> Container[str]:
        """The column names the task reads (targets that `columns=` may map to)."""
        return set(self.default_columns.values())

    def read(self, path: str | os.PathLike, columns: Mapping[str, str] | None = None) -> Records:
        renames = merge_columns(self.default_columns, columns, self.known_columns(), self.name)
        return read_records(path, columns=renames, required=self.required_columns)

    def fit_labels(self, train_records: Sequence[dict]) -> None:
        pass

    def check_labels(self, records: Sequence[dict], split: Split) -> None:
        pass

    def model_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"


# Imported after TaskOptions, Task and TaskBase exist: the task modules import them from here.
from xlmr_jax.finetune.tasks.language_modeling import (
    CausalLanguageModelingTask,
    MaskedLanguageModelingTask,
)
from xlmr_jax.finetune.tasks.multiple_choice import MultipleChoiceTask
from xlmr_jax.finetune.tasks.question_answering import QuestionAnsweringTask
from xlmr_jax.finetune.tasks.text_classification import TextClassificationTask
from xlmr_jax.finetune.tasks.token_classification import TokenClassificationTask

TASKS: dict[str, type] = {task.name: task for task in (
    TextClassificationTask, TokenClassificationTask, QuestionAnsweringTask, MultipleChoiceTask,
    MaskedLanguageModelingTask, CausalLanguageModelingTask,
)}


def make_task(name: str | Any, options: TaskOptions | Mapping[str, Any] | Any | None = None) -> Task:
    """The task called `name` with `options`; or `make_task(config)` for an object that has both the
    task's name (`config.task`) and the option fields (a `FinetuneConfig`)."""
    if not isinstance(name, str) and options is None and isinstance(getattr(name, "task", None), str):
        name, options = name.task, name
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    return TASKS[name](options)


__all__ = [
    "PROBLEM_TYPES", "TASKS", "CausalLanguageModelingTask", "MaskedLanguageModelingTask", "MultipleChoiceTask",
    "QuestionAnsweringTask", "Split", "Task", "TaskBase", "TaskOptions", "TextClassificationTask",
    "TokenClassificationTask", "make_task",
]
