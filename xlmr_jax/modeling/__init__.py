"""Flax NNX modules of XLM-RoBERTa, named like the PyTorch reference."""

from xlmr_jax.modeling.cache import KVCache
from xlmr_jax.modeling.classification_models import (
    XLMRobertaForMultipleChoice,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
)
from xlmr_jax.modeling.lm_models import XLMRobertaForCausalLM, XLMRobertaForMaskedLM
from xlmr_jax.modeling.model import XLMRobertaModel

__all__ = [
    "KVCache",
    "XLMRobertaForCausalLM",
    "XLMRobertaForMaskedLM",
    "XLMRobertaForMultipleChoice",
    "XLMRobertaForQuestionAnswering",
    "XLMRobertaForSequenceClassification",
    "XLMRobertaForTokenClassification",
    "XLMRobertaModel",
]
