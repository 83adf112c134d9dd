"""Fine-tuning for every task head: `finetune(FinetuneConfig(...))`, or `xlmr-jax finetune`."""

from xlmr_jax.finetune.config import FinetuneConfig
from xlmr_jax.finetune.loop import NonFiniteError, finetune

__all__ = ["FinetuneConfig", "NonFiniteError", "finetune"]
