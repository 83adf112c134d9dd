"""Masked-LM inputs as the reference's data collator makes them (BERT recipe)."""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: np.ndarray,
    special_tokens_mask: np.ndarray,
    *,
    mask_token_id: int,
    vocab_size: int,
    rng: np.random.Generator,
    probability: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """(masked input ids, labels): each non-special token is chosen with `probability`; a chosen
    token becomes `<mask>` 80% of the time, a random token 10%, stays 10%. Labels hold the original
    id at chosen positions and -100 elsewhere (ignored by the loss)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"mask probability must be in (0, 1), got {probability}")
    chosen = (rng.random(input_ids.shape) < probability) & ~special_tokens_mask.astype(bool)
    labels = np.where(chosen, input_ids, IGNORE_INDEX)
    roll = rng.random(input_ids.shape)
    masked = np.where(chosen & (roll < 0.8), mask_token_id, input_ids)
    random_ids = rng.integers(0, vocab_size, size=input_ids.shape)
    masked = np.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, masked)
    return masked.astype(input_ids.dtype), labels.astype(np.int32)
