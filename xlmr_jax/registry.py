"""Model classes by the reference's architecture names (both layouts)."""

from __future__ import annotations

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

MODEL_CLASSES = {
    cls.hf_architecture: cls
    for cls in (
        XLMRobertaModel, XLMRobertaForMaskedLM, XLMRobertaForCausalLM, XLMRobertaForSequenceClassification,
        XLMRobertaForMultipleChoice, XLMRobertaForTokenClassification, XLMRobertaForQuestionAnswering,
    )
}


def model_class_for(config: XLMRobertaConfig, architecture: str | None = None):
    """The class named by `architecture`, else by the config's `architectures`, else the bare model."""
    names = [architecture] if architecture else list(config.extra.get("architectures") or [])
    for name in names:
        canonical = name.replace("XLMRobertaXL", "XLMRoberta", 1)
        if canonical in MODEL_CLASSES:
            return MODEL_CLASSES[canonical]
        if architecture:
            raise ValueError(f"architecture {architecture!r} is not one of {sorted(MODEL_CLASSES)}")
    return XLMRobertaModel
