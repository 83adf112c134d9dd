"""Resolution of ``padding`` / ``truncation`` / ``max_length`` with the reference's defaults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xlmr_jax.tokenization.padding import Padding, check_buckets, resolve_padding
from xlmr_jax.tokenization.truncation import Truncation, resolve_truncation


@dataclass(frozen=True)
class LengthRequest:
    """The length-related arguments of one tokenizer call, as the user passed them."""

    padding: bool | str
    truncation: bool | str | None
    max_length: int | None
    stride: int
    pad_to_multiple_of: int | None
    buckets: Sequence[int] | None
    overflow: bool


@dataclass(frozen=True)
class Lengths:
    """Resolved settings for one call."""

    padding: Padding
    truncation: Truncation
    max_length: int | None
    budget: int | None  # text tokens that fit once special tokens are counted
    pad_to_multiple_of: int | None
    buckets: tuple[int, ...] | None


def resolve_lengths(request: LengthRequest, model_max_length: int | None, n_special: int) -> Lengths:
    """The reference's rules (a bare ``max_length`` truncates; ``model_max_length`` fills in a missing
    ``max_length``), plus clear errors for settings that cannot work."""
    _check_numbers(request)
    max_length = request.max_length
    truncation = request.truncation
    if max_length is not None and request.padding is False and truncation is None:
        truncation = True
    padding = resolve_padding(request.padding)
    if padding is Padding.DO_NOT_PAD and (
        request.pad_to_multiple_of is not None or request.buckets is not None
    ):
        # Asking for a multiple or for buckets only makes sense with padding: do it rather than ignore it.
        padding = Padding.LONGEST
    buckets = check_buckets(request.buckets)
    if buckets is not None and (padding is Padding.MAX_LENGTH or request.pad_to_multiple_of is not None):
        raise ValueError("buckets replaces padding='max_length' and pad_to_multiple_of; pass only one")
    strategy = resolve_truncation(truncation)
    if max_length is None and padding is Padding.MAX_LENGTH:
        if model_max_length is None:
            raise ValueError("padding='max_length' needs max_length: this tokenizer has no model_max_length")
        max_length = model_max_length
    if max_length is None and strategy is not Truncation.DO_NOT_TRUNCATE:
        if model_max_length is None:
            strategy = Truncation.DO_NOT_TRUNCATE
        else:
            max_length = model_max_length
    budget = None
    if strategy is not Truncation.DO_NOT_TRUNCATE:
        budget = _text_budget(max_length, n_special, request.stride, request.overflow)
        multiple = request.pad_to_multiple_of
        if padding is not Padding.DO_NOT_PAD and multiple and max_length % multiple:
            raise ValueError(
                f"max_length={max_length} is not a multiple of pad_to_multiple_of={multiple}; "
                f"truncated rows would not fill the padded width"
            )
    return Lengths(padding, strategy, max_length, budget, request.pad_to_multiple_of, buckets)


def _check_numbers(request: LengthRequest) -> None:
    for name, value in (
        ("max_length", request.max_length),
        ("pad_to_multiple_of", request.pad_to_multiple_of),
    ):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name}={value!r} must be a positive int or None")
    if not isinstance(request.stride, (int, np.integer)) or request.stride < 0:
        raise ValueError(f"stride={request.stride!r} must be a non-negative int")


def _text_budget(max_length: int, n_special: int, stride: int, overflow: bool) -> int:
    if max_length < n_special:
        layout = "<s> A </s></s> B </s>" if n_special == 4 else "<s> A </s>"
        raise ValueError(
            f"max_length={max_length} is smaller than the {n_special} special tokens every row needs "
            f"({layout}); use max_length >= {n_special}"
        )
    budget = max_length - n_special
    if overflow and stride >= budget:
        raise ValueError(
            f"stride={stride} must be smaller than the {budget} text tokens that fit in "
            f"max_length={max_length} after {n_special} special tokens"
        )
    return budget
