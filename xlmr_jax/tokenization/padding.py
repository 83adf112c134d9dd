"""Padding strategies, including bucketed widths so jitted functions see few distinct shapes."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np


class Padding(enum.Enum):
    DO_NOT_PAD = "do_not_pad"
    LONGEST = "longest"
    MAX_LENGTH = "max_length"


def resolve_strategy(enum_type: type[enum.Enum], value, when_true: enum.Enum, when_false: enum.Enum, name: str):
    """Map a user argument (True, False/None, or a strategy name) to a member of `enum_type`."""
    if value is True:
        return when_true
    if value is False or value is None:
        return when_false
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(repr(member.value) for member in enum_type)
        raise ValueError(f"{name}={value!r} is not one of True, False, {choices}") from None


def resolve_padding(padding: bool | str) -> Padding:
    """Map the user's ``padding`` argument (bool or strategy name) to a strategy."""
    return resolve_strategy(Padding, padding, Padding.LONGEST, Padding.DO_NOT_PAD, "padding")


def check_buckets(buckets: Sequence[int] | None) -> tuple[int, ...] | None:
    """Validated, sorted bucket widths."""
    if buckets is None:
        return None
    widths = tuple(sorted(int(width) for width in buckets))
    if not widths or widths[0] < 1:
        raise ValueError(f"buckets={tuple(buckets)!r} must be a non-empty sequence of positive lengths")
    return widths


def round_up(width: int, multiple: int | None) -> int:
    """``width`` rounded up to a multiple of ``multiple`` (unchanged when None)."""
    if multiple is None or width % multiple == 0:
        return width
    return (width // multiple + 1) * multiple


def padded_width(
    lengths: np.ndarray,
    strategy: Padding,
    max_length: int | None,
    pad_to_multiple_of: int | None,
    buckets: tuple[int, ...] | None,
) -> int | None:
    """Row width after padding, or None when rows keep their own lengths."""
    if strategy is Padding.DO_NOT_PAD:
        return None
    longest = int(lengths.max()) if len(lengths) else 0
    if strategy is Padding.MAX_LENGTH:
        # Like the reference, rows longer than max_length (no truncation) are left as they are.
        return round_up(max_length, pad_to_multiple_of)
    if buckets is not None:
        return _bucket_width(longest, buckets)
    return round_up(longest, pad_to_multiple_of)


def _bucket_width(longest: int, buckets: tuple[int, ...]) -> int:
    for width in buckets:
        if longest <= width:
            return width
    raise ValueError(
        f"the longest sequence has {longest} tokens, more than the largest bucket {buckets[-1]}; "
        f"add a larger bucket or pass truncation=True, max_length={buckets[-1]}"
    )
