"""HF checkpoint keys <-> Flax paths (one table), lazy safetensors reading, streaming load."""

from xlmr_jax.weights.checkpoint import CheckpointError

__all__ = ["CheckpointError"]
