"""`xlmr_jax.pipeline(task, model, ...)`: the reference's pipelines, key for key, in JAX.

Every task is one file plugged into the engine of `base.py`; `TASKS` lists them.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp

from xlmr_jax.pipelines.base import DEFAULT_BUCKETS, Feature, Pipeline
from xlmr_jax.pipelines.embeddings import SentenceEmbeddingsPipeline
from xlmr_jax.pipelines.feature_extraction import FeatureExtractionPipeline
from xlmr_jax.pipelines.fill_mask import FillMaskPipeline
from xlmr_jax.pipelines.question_answering import QuestionAnsweringPipeline
from xlmr_jax.pipelines.text_classification import TextClassificationPipeline
from xlmr_jax.pipelines.text_generation import TextGenerationPipeline
from xlmr_jax.pipelines.token_classification import TokenClassificationPipeline
from xlmr_jax.pipelines.zero_shot import ZeroShotClassificationPipeline

TASKS: dict[str, type[Pipeline]] = {
    cls.task: cls
    for cls in (FillMaskPipeline, TextClassificationPipeline, ZeroShotClassificationPipeline,
                FeatureExtractionPipeline, SentenceEmbeddingsPipeline, TokenClassificationPipeline,
                QuestionAnsweringPipeline, TextGenerationPipeline)
}
TASKS["ner"] = TokenClassificationPipeline  # the reference's alias
TASKS["sentiment-analysis"] = TextClassificationPipeline  # the reference's alias


def pipeline(task: str, model: Any = None, tokenizer: Any = None, *, dtype=None, mesh=None, rules: str = "fsdp",
             batch_size: int = 8, buckets=DEFAULT_BUCKETS, revision: str | None = None,
             quantization: str | None = None, **task_options) -> Pipeline:
    """A callable for `task` (one of `TASKS`) on `model`: a checkpoint directory, a hub id, or a model
    object of ours. `tokenizer`: a path or an `XLMRobertaTokenizer` (default: the model's directory).
    `dtype`: the compute dtype (e.g. `jnp.bfloat16`; params stay float32). `mesh`: split each batch
    (and the params, by `rules`) over its devices. `task_options` are the task's defaults for every
    call (e.g. `top_k=3`); a call may override them. `quantization` ("int8", "int4", "nf4"): load
    with weight-only quantised matmul kernels (see `xlmr_jax.quantization`)."""
    from xlmr_jax.tokenizer import XLMRobertaTokenizer

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; the tasks are: {', '.join(sorted(TASKS))}")
    cls = TASKS[task]
    if model is None:
        raise ValueError(f"{task}: give a model (a checkpoint directory, a hub id or a model object)")
    if isinstance(model, str | os.PathLike):
        directory = _checked_checkpoint(cls, model, revision)
        task_options = {**cls.checkpoint_options(directory), **task_options}
        model = cls.model_class.from_pretrained(directory, dtype=dtype or jnp.float32, mesh=mesh, rules=rules,
                                                quantization=quantization, **cls.load_kwargs)
        tokenizer = directory if tokenizer is None else tokenizer
    elif not isinstance(model, cls.model_class):
        raise TypeError(f"{task} needs a {cls.model_class.__name__}, got a {type(model).__name__}")
    elif dtype is not None:
        raise ValueError(f"{task}: dtype applies when loading; a model object keeps the dtype it was built with")
    elif quantization is not None:
        raise ValueError(f"{task}: quantization applies when loading; quantise a model object with "
                         "xlmr_jax.quantization.quantize_model(model, ...)")
    if tokenizer is None:
        raise ValueError(f"{task}: a model object needs a tokenizer (a path or an XLMRobertaTokenizer)")
    if isinstance(tokenizer, str | os.PathLike):
        tokenizer = XLMRobertaTokenizer.from_pretrained(tokenizer)
    return cls(model, tokenizer, batch_size=batch_size, buckets=buckets, mesh=mesh, **task_options)


def _checked_checkpoint(cls: type[Pipeline], path, revision) -> str:
    """The checkpoint directory, once its config says it holds the head the task needs (said before
    any weight is read or anything computed)."""
    from xlmr_jax.pretrained import read_config, resolve_pretrained_path
    from xlmr_jax.registry import model_class_for

    directory = resolve_pretrained_path(path, revision)
    held = model_class_for(read_config(directory))
    needed = cls.model_class
    if needed.hf_prefix and held is not needed:
        raise ValueError(f"{cls.task} needs a checkpoint of {needed.hf_architecture}; {path} holds "
                         f"{held.hf_architecture} (its config.json's architectures)")
    return directory


__all__ = ["TASKS", "Feature", "Pipeline", "pipeline"]
