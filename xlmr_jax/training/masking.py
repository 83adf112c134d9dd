"""Masked-LM inputs as the reference's data collator makes them (BERT recipe)."""

from __future__ import annotations

import math

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
    max_predictions: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(masked input ids, labels): each non-special token is chosen with `probability`; a chosen
    token becomes `<mask>` 80% of the time, a random token 10%, stays 10%. Labels hold the original
    id at chosen positions and -100 elsewhere (ignored by the loss). With `max_predictions`, a row
    that drew more chosen tokens keeps a random `max_predictions` of them (see `prediction_width`)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"mask probability must be in (0, 1), got {probability}")
    draws = rng.random(input_ids.shape)
    chosen = (draws < probability) & ~special_tokens_mask.astype(bool)
    if max_predictions is not None and input_ids.shape[-1] > max_predictions:
        # The draws of the chosen tokens are uniform on [0, probability): keeping the smallest
        # `max_predictions` of them keeps a uniformly random subset.
        cutoff = np.sort(np.where(chosen, draws, np.inf), axis=-1)[..., max_predictions - 1:max_predictions]
        chosen &= draws <= cutoff
    labels = np.where(chosen, input_ids, IGNORE_INDEX)
    roll = rng.random(input_ids.shape)
    masked = np.where(chosen & (roll < 0.8), mask_token_id, input_ids)
    random_ids = rng.integers(0, vocab_size, size=input_ids.shape)
    masked = np.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, masked)
    return masked.astype(input_ids.dtype), labels.astype(np.int32)


def prediction_width(length: int, probability: float) -> int:
    """Static width of `masked_positions` for rows of `length` tokens: the mean number of chosen
    tokens plus six standard deviations, rounded up to a multiple of 8 (at most `length`). A row
    exceeds it about once in a billion, and then keeps a random subset (`mask_tokens`)."""
    mean = length * probability
    wide = mean + 6.0 * math.sqrt(length * probability * (1.0 - probability)) + 1.0
    return int(min(length, 8 * math.ceil(wide / 8)))


def masked_positions(labels: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, labels at them), both (batch, width): the positions of each row's non-ignored
    labels in order, then -1 (positions) and -100 (labels) filling the row."""
    chosen = labels != IGNORE_INDEX
    counts = chosen.sum(axis=-1)
    if counts.max(initial=0) > width:
        raise ValueError(f"a row has {int(counts.max())} masked tokens, more than the width {width}")
    # A stable sort of "not chosen" brings the chosen positions to the front, in order.
    order = np.argsort(~chosen, axis=-1, kind="stable")[..., :width].astype(np.int32)
    filled = np.arange(order.shape[-1])[None, :] < counts[:, None]
    positions = np.where(filled, order, -1).astype(np.int32)
    gathered = np.where(filled, np.take_along_axis(labels, order, axis=-1), IGNORE_INDEX).astype(np.int32)
    return positions, gathered


def masked_lm_batch(batch: dict[str, np.ndarray], *, special_ids, mask_token_id: int, vocab_size: int,
                    rng: np.random.Generator, probability: float = 0.15) -> dict[str, np.ndarray]:
    """A batch of `input_ids` / `attention_mask` made a masked-LM training batch: tokens chosen among
    the real, non-special ones (`mask_tokens`, capped at `prediction_width`), their positions as
    `masked_positions` and the original ids there as `labels` (both (batch, width), -1 / -100 after
    each row's last), the rest of the batch as it was."""
    ids, attention = np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
    special = np.isin(ids, list(special_ids)) | ~attention.astype(bool)
    width = prediction_width(ids.shape[1], probability)
    masked, labels = mask_tokens(ids, special, mask_token_id=mask_token_id, vocab_size=vocab_size, rng=rng,
                                 probability=probability, max_predictions=width)
    positions, labels = masked_positions(labels, width)
    return dict(batch, input_ids=masked, labels=labels, masked_positions=positions)
