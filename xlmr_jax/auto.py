"""Auto classes, as the reference's documentation uses them: the class of a task, chosen and checked
from the checkpoint's `config.json` (both layouts: `xlm-roberta` and the pre-LayerNorm
`xlm-roberta-xl` are the same classes here), with the classes' own `from_pretrained` options."""

from __future__ import annotations

import os

from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.modeling import (
    XLMRobertaForCausalLM,
    XLMRobertaForMaskedLM,
    XLMRobertaForMultipleChoice,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
    XLMRobertaModel,
)


class _AutoModel:
    model_class: type

    def __init__(self):
        raise TypeError(f"{type(self).__name__} is not built directly: use {type(self).__name__}.from_pretrained")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs):
        """`model_class.from_pretrained(path, **kwargs)` once the checkpoint's config is one of ours
        (`model_type` xlm-roberta / xlm-roberta-xl; anything else is refused, naming the file)."""
        return cls.model_class.from_pretrained(path, **kwargs)

    @classmethod
    def from_config(cls, config: XLMRobertaConfig, **kwargs):
        """A model with freshly initialised weights (`rngs=`, `dtype=` as the class takes them)."""
        return cls.model_class(config, **kwargs)


def _auto(name: str, model_class: type) -> type:
    doc = f"`from_pretrained` / `from_config` give a `{model_class.__name__}`."
    return type(name, (_AutoModel,), {"model_class": model_class, "__doc__": doc})


AutoModel = _auto("AutoModel", XLMRobertaModel)
AutoModelForMaskedLM = _auto("AutoModelForMaskedLM", XLMRobertaForMaskedLM)
AutoModelForCausalLM = _auto("AutoModelForCausalLM", XLMRobertaForCausalLM)
AutoModelForSequenceClassification = _auto("AutoModelForSequenceClassification", XLMRobertaForSequenceClassification)
AutoModelForTokenClassification = _auto("AutoModelForTokenClassification", XLMRobertaForTokenClassification)
AutoModelForQuestionAnswering = _auto("AutoModelForQuestionAnswering", XLMRobertaForQuestionAnswering)
AutoModelForMultipleChoice = _auto("AutoModelForMultipleChoice", XLMRobertaForMultipleChoice)


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(path)`: the XLM-R tokenizer of a checkpoint directory or hub id."""

    def __init__(self):
        raise TypeError("AutoTokenizer is not built directly: use AutoTokenizer.from_pretrained")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs):
        from xlmr_jax.pretrained import resolve_pretrained_path
        from xlmr_jax.tokenizer import XLMRobertaTokenizer

        return XLMRobertaTokenizer.from_pretrained(resolve_pretrained_path(path), **kwargs)
