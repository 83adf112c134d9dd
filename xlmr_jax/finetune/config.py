"""What a fine-tuning run is: one dataclass, checked as a whole before anything is loaded.

The same fields are the `xlmr-jax finetune` flags (the CLI builds this object), so a run is
described the same way from Python and from the shell, and `run_config.json` in the output
directory records it for `--resume` to compare against.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

TASK_NAMES = ("text-classification", "token-classification", "question-answering", "multiple-choice",
              "masked-lm", "causal-lm")
DTYPES = ("float32", "bfloat16")
ON_NONFINITE = ("stop", "skip")
SCHEDULES = ("linear", "cosine", "constant")
QUANTIZATIONS = ("int8", "int4", "nf4")

# The metric that picks the best checkpoint when none is named, per task (higher is better except loss).
DEFAULT_BEST_METRIC = {
    "text-classification": "accuracy", "token-classification": "f1", "question-answering": "f1",
    "multiple-choice": "accuracy", "masked-lm": "loss", "causal-lm": "loss",
}

# Fields that change what a resumed run computes: they must equal the interrupted run's.
RESUME_MUST_MATCH = (
    "task", "model", "train_file", "validation_file", "columns", "max_length", "problem_type",
    "label_all_tokens", "doc_stride", "pack", "mlm_probability", "batch_size", "epochs", "max_steps",
    "learning_rate", "weight_decay", "warmup_steps", "warmup_ratio", "schedule", "max_grad_norm",
    "gradient_accumulation_steps", "layerwise_lr_decay", "adam_b1", "adam_b2", "adam_eps", "dtype",
    "dropout", "seed", "buckets", "on_nonfinite", "lora_rank", "lora_alpha", "lora_targets", "quantization",
)


@dataclasses.dataclass
class FinetuneConfig:
    """A fine-tuning run. Steps count optimizer updates (each `gradient_accumulation_steps` batches);
    `batch_size` is the global batch of one micro-step (all processes together)."""

    task: str
    model: str
    train_file: str
    output: str
    validation_file: str | None = None
    columns: dict[str, str] = dataclasses.field(default_factory=dict)  # your column -> ours
    # -- the task's data
    max_length: int = 128
    problem_type: str | None = None           # text-classification; None: read from the labels
    label_all_tokens: bool = False            # token-classification: every sub-token, not the first only
    doc_stride: int | None = None             # question-answering window overlap; None: min(128, max_length // 3)
    max_answer_length: int = 30
    version_2_with_negative: bool = False     # question-answering: SQuAD v2 (questions without answer)
    pack: bool = True                         # masked-lm / causal-lm: full-length rows, no padding
    mlm_probability: float = 0.15
    buckets: tuple[int, ...] | None = None    # sequence widths; None: powers of two from 32 to max_length
    # -- optimisation (the reference Trainer's defaults)
    batch_size: int = 32
    eval_batch_size: int | None = None
    epochs: float = 3.0
    max_steps: int | None = None              # overrides epochs
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: float | None = None
    schedule: str = "linear"
    max_grad_norm: float | None = 1.0
    gradient_accumulation_steps: int = 1
    layerwise_lr_decay: float | None = None
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    dtype: str = "float32"                    # compute dtype; parameters and optimizer stay float32
    dropout: float | None = None              # None: the checkpoint's; 0 turns dropout off
    seed: int = 42
    # The layers as straight-line code (XLMRobertaConfig.unroll_layers): faster steps, a longer
    # compile; --no-unroll-layers keeps the scan loop (deep XL/XXL models, where compile time counts).
    unroll_layers: bool = True
    on_nonfinite: str = "stop"                # a NaN/inf loss or gradient: stop, or skip the update
    # -- adapters and quantisation (QLoRA = both)
    lora_rank: int | None = None              # train LoRA adapters (and the task head) only
    lora_alpha: float = 16.0
    lora_targets: str = "query,key,value,attention_output,intermediate,output"
    quantization: str | None = None           # int8 / int4 / nf4 weights of the frozen model (needs lora_rank)
    # -- evaluation and checkpoints
    eval_every: int | None = None             # steps; None: at the end only
    save_every: int | None = None             # steps; None: at each evaluation and at the end
    keep_checkpoints: int = 2                 # the last K, plus the best
    best_metric: str | None = None            # None: the task's (accuracy, f1, loss)
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    # -- where it runs
    mesh: str | None = "auto"                 # "data=2,fsdp=4"; "auto": every device on data; None: one
    rules: str = "fsdp"
    resume: bool = False
    overwrite: bool = False
    log_every: int = 10
    progress: bool = True

    def __post_init__(self):
        if self.buckets is not None:
            self.buckets = tuple(self.buckets)
        self.columns = dict(self.columns or {})

    # -- derived values
    @property
    def greater_is_better(self) -> bool:
        return self.metric_name != "loss"

    @property
    def metric_name(self) -> str:
        return self.best_metric or DEFAULT_BEST_METRIC[self.task]

    def task_options(self) -> dict[str, Any]:
        """The options the task reads (see `xlmr_jax.finetune.tasks.TaskOptions`)."""
        stride = self.doc_stride if self.doc_stride is not None else min(128, self.max_length // 3)
        return dict(max_length=self.max_length, problem_type=self.problem_type,
                    label_all_tokens=self.label_all_tokens, doc_stride=stride,
                    max_answer_length=self.max_answer_length, version_2_with_negative=self.version_2_with_negative,
                    pack=self.pack, mlm_probability=self.mlm_probability)

    def resolved_buckets(self) -> tuple[int, ...]:
        if self.buckets is not None:
            return tuple(sorted(self.buckets))
        widths, width = [], 32
        while width < self.max_length:
            widths.append(width)
            width *= 2
        return (*widths, self.max_length)

    def total_steps(self, batches_per_epoch: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * batches_per_epoch / self.gradient_accumulation_steps))

    def check(self) -> None:
        """Every problem with the fields at once, as one ValueError naming each field."""
        problems = []
        if self.task not in TASK_NAMES:
            problems.append(f"task must be one of {', '.join(TASK_NAMES)}; got {self.task!r}")
        for name in ("model", "train_file", "output"):
            if not isinstance(getattr(self, name), (str, os.PathLike)) or not str(getattr(self, name)):
                problems.append(f"{name} must be a path, got {getattr(self, name)!r}")
        ints = dict(max_length=3, max_answer_length=1, batch_size=1, warmup_steps=0,
                    gradient_accumulation_steps=1, keep_checkpoints=1, log_every=1)
        for name, least in ints.items():
            _check_int(problems, name, getattr(self, name), least)
        if self.doc_stride is not None:
            _check_int(problems, "doc_stride", self.doc_stride, 0)
        for name in ("eval_batch_size", "max_steps", "eval_every", "save_every", "early_stopping_patience"):
            if getattr(self, name) is not None:
                _check_int(problems, name, getattr(self, name), 1)
        for name, value, low, high in (("learning_rate", self.learning_rate, 0, None),
                                       ("weight_decay", self.weight_decay, 0, None),
                                       ("epochs", self.epochs, 0, None),
                                       ("mlm_probability", self.mlm_probability, 0, 1),
                                       ("adam_eps", self.adam_eps, 0, None)):
            if not _in_range(value, low, high, open_low=name in ("epochs", "mlm_probability"),
                             open_high=name == "mlm_probability"):
                problems.append(f"{name} out of range: {value!r}")
        for name, value in (("warmup_ratio", self.warmup_ratio), ("dropout", self.dropout)):
            if value is not None and not _in_range(value, 0, 1, open_high=name == "dropout"):
                problems.append(f"{name} must be in [0, 1{']' if name == 'warmup_ratio' else ')'}, got {value!r}")
        if self.layerwise_lr_decay is not None and not _in_range(self.layerwise_lr_decay, 0, 1, open_low=True):
            problems.append(f"layerwise_lr_decay must be in (0, 1], got {self.layerwise_lr_decay!r}")
        if self.max_grad_norm is not None and not _in_range(self.max_grad_norm, 0, None, open_low=True):
            problems.append(f"max_grad_norm must be > 0 (or None), got {self.max_grad_norm!r}")
        for name, value, choices in (("dtype", self.dtype, DTYPES), ("on_nonfinite", self.on_nonfinite, ON_NONFINITE),
                                     ("schedule", self.schedule, SCHEDULES)):
            if value not in choices:
                problems.append(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        if self.warmup_steps and self.warmup_ratio is not None:
            problems.append("give warmup_steps or warmup_ratio, not both")
        if self.buckets is not None:
            if not self.buckets or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.buckets):
                problems.append(f"buckets must be positive integers, got {list(self.buckets)!r}")
            elif max(self.buckets) != self.max_length:
                problems.append(f"the largest bucket must equal max_length={self.max_length}, got {max(self.buckets)}")
        if self.best_metric is not None and not isinstance(self.best_metric, str):
            problems.append(f"best_metric must be a metric name, got {self.best_metric!r}")
        if (self.early_stopping_patience is not None or self.eval_every is not None) and not self.validation_file:
            problems.append("eval_every and early_stopping_patience need a validation_file")
        if self.lora_rank is not None:
            _check_int(problems, "lora_rank", self.lora_rank, 1)
            if not _in_range(self.lora_alpha, 0, None, open_low=True):
                problems.append(f"lora_alpha must be > 0, got {self.lora_alpha!r}")
        if self.quantization is not None:
            if self.quantization not in QUANTIZATIONS:
                problems.append(f"quantization must be one of {', '.join(QUANTIZATIONS)}; got {self.quantization!r}")
            elif self.lora_rank is None:
                problems.append("quantization needs lora_rank: quantised weights are frozen, only adapters train (QLoRA)")
        if self.resume and self.overwrite:
            problems.append("resume and overwrite exclude each other (resume continues OUTPUT, overwrite replaces it)")
        if not isinstance(self.columns, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                            for k, v in self.columns.items()):
            problems.append(f"columns must map your column names to ours (str -> str), got {self.columns!r}")
        if problems:
            raise ValueError("fine-tuning configuration: " + "; ".join(problems))

    # -- recorded with the run
    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["buckets"] = list(self.buckets) if self.buckets is not None else None
        return data

    def resume_differences(self, recorded: Mapping[str, Any]) -> list[str]:
        """The fields that differ from a recorded run's `run_config.json` (compared as JSON)."""
        mine = json.loads(json.dumps(self.to_json()))
        return [f"{name}: was {recorded.get(name)!r}, now {mine.get(name)!r}"
                for name in RESUME_MUST_MATCH if recorded.get(name) != mine.get(name)]


def _check_int(problems: list[str], name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        problems.append(f"{name} must be an integer >= {least}, got {value!r}")


def _in_range(value, low, high, *, open_low: bool = False, open_high: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return False
    if low is not None and (value < low or (open_low and value == low)):
        return False
    return high is None or (value < high if open_high else value <= high)
