"""XLM-RoBERTa in JAX/Flax NNX: every task head of the reference, streaming checkpoint loading."""

from xlmr_jax.auto import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)
from xlmr_jax.config import PRESETS, XLMRobertaConfig
from xlmr_jax.jit import jit_forward
from xlmr_jax.modeling import (
    KVCache,
    XLMRobertaForCausalLM,
    XLMRobertaForMaskedLM,
    XLMRobertaForMultipleChoice,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
    XLMRobertaModel,
)
from xlmr_jax.pipelines import TASKS, pipeline
from xlmr_jax.registry import MODEL_CLASSES
from xlmr_jax.tokenizer import XLMRobertaTokenizer
from xlmr_jax.weights import CheckpointError

__all__ = [
    "MODEL_CLASSES",
    "PRESETS",
    "TASKS",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForMaskedLM",
    "AutoModelForMultipleChoice",
    "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "AutoTokenizer",
    "CheckpointError",
    "KVCache",
    "XLMRobertaConfig",
    "XLMRobertaForCausalLM",
    "XLMRobertaForMaskedLM",
    "XLMRobertaForMultipleChoice",
    "XLMRobertaForQuestionAnswering",
    "XLMRobertaForSequenceClassification",
    "XLMRobertaForTokenClassification",
    "XLMRobertaModel",
    "XLMRobertaTokenizer",
    "jit_forward",
    "pipeline",
]
__version__ = "0.1.0"
