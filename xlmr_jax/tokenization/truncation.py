"""Truncation strategies and overflow windows, with the reference fast tokenizer's exact semantics.

The rules mirror ``tokenizers``' ``truncate_encodings`` / ``Encoding::truncate`` / ``merge_with``
so that QA-style sliding windows (``stride`` + ``return_overflowing_tokens``) line up token for
token with the reference: a sequence of ``n`` tokens cut to ``budget`` yields windows starting at
``0, budget - stride, 2 * (budget - stride), ...`` until one reaches the end.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from xlmr_jax.tokenization.padding import resolve_strategy


class Truncation(enum.Enum):
    LONGEST_FIRST = "longest_first"
    ONLY_FIRST = "only_first"
    ONLY_SECOND = "only_second"
    DO_NOT_TRUNCATE = "do_not_truncate"


def resolve_truncation(truncation: bool | str | None) -> Truncation:
    """Map the user's ``truncation`` argument (bool, strategy name or None) to a strategy."""
    return resolve_strategy(Truncation, truncation, Truncation.LONGEST_FIRST, Truncation.DO_NOT_TRUNCATE,
                            "truncation")


@dataclass(frozen=True)
class WindowPlan:
    """Which slice of which example every output row holds (``second_*`` is None for single texts)."""

    sample: np.ndarray
    first_start: np.ndarray
    first_stop: np.ndarray
    second_start: np.ndarray | None
    second_stop: np.ndarray | None


def plan_windows(
    first_lengths: np.ndarray,
    second_lengths: np.ndarray | None,
    strategy: Truncation,
    budget: int | None,
    stride: int,
    overflow: bool,
) -> WindowPlan:
    """Slices for every output row; ``budget`` is the token budget left after special tokens."""
    if strategy is Truncation.ONLY_SECOND and second_lengths is None:
        raise ValueError(
            "truncation='only_second' needs text_pair; use 'only_first' or True for single texts"
        )
    if strategy is Truncation.DO_NOT_TRUNCATE or budget is None:
        return _untruncated(first_lengths, second_lengths)
    targets = _targets(first_lengths, second_lengths, strategy, budget)
    if not overflow:
        # Without overflow only the first window of each sequence survives: a prefix.
        sample = np.arange(len(first_lengths))
        first_stop = np.minimum(first_lengths, targets[0])
        second_stop = None if second_lengths is None else np.minimum(second_lengths, targets[1])
        zeros = np.zeros_like(sample)
        return WindowPlan(sample, zeros, first_stop, None if second_stop is None else zeros, second_stop)
    return _overflow_windows(first_lengths, second_lengths, targets, stride)


def _untruncated(first_lengths: np.ndarray, second_lengths: np.ndarray | None) -> WindowPlan:
    sample = np.arange(len(first_lengths))
    zeros = np.zeros_like(sample)
    if second_lengths is None:
        return WindowPlan(sample, zeros, first_lengths, None, None)
    return WindowPlan(sample, zeros, first_lengths, zeros, second_lengths)


def _targets(
    first: np.ndarray, second: np.ndarray | None, strategy: Truncation, budget: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per example, the length each sequence is cut to (a sequence already short enough keeps its length)."""
    if budget == 0:
        # The reference special-cases an empty budget: every sequence is emptied, whatever the strategy.
        return np.zeros_like(first), None if second is None else np.zeros_like(second)
    total = first if second is None else first + second
    over = total > budget
    if second is None:
        if strategy is Truncation.ONLY_FIRST:
            _check_long_enough(first, total - budget, over, "first")
        return np.where(over, budget, first), None
    if strategy is Truncation.LONGEST_FIRST:
        return _longest_first_targets(first, second, budget)
    if strategy is Truncation.ONLY_FIRST:
        _check_long_enough(first, total - budget, over, "first")
        return np.where(over, first - (total - budget), first), second
    _check_long_enough(second, total - budget, over, "second")
    return first, np.where(over, second - (total - budget), second)


def _longest_first_targets(
    first: np.ndarray, second: np.ndarray, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's pair rule: shorten the longer one; if both are long, split the budget evenly."""
    shorter = np.minimum(first, second)
    longer = np.where(shorter > budget, shorter, np.maximum(shorter, budget - shorter))
    both_long = shorter + longer > budget
    shorter = np.where(both_long, budget // 2, shorter)
    longer = np.where(both_long, budget // 2 + budget % 2, longer)
    first_is_shorter = first <= second
    untouched = first + second <= budget
    first_target = np.where(untouched, first, np.where(first_is_shorter, shorter, longer))
    second_target = np.where(untouched, second, np.where(first_is_shorter, longer, shorter))
    return first_target, second_target


def _check_long_enough(lengths: np.ndarray, to_remove: np.ndarray, over: np.ndarray, which: str) -> None:
    too_short = np.flatnonzero(over & (lengths <= to_remove))
    if len(too_short):
        index = int(too_short[0])
        raise ValueError(
            f"example {index}: truncation='only_{which}' cannot fit max_length, the {which} sequence has "
            f"{int(lengths[index])} tokens but {int(to_remove[index])} must go; "
            f"use truncation='longest_first' or a larger max_length"
        )


def sequence_windows(length: int, target: int, stride: int) -> list[tuple[int, int]]:
    """``Encoding::truncate``: the kept window first, then the overflow windows, each ``target`` long."""
    if target >= length:
        return [(0, length)]
    step = target - stride
    windows = []
    for start in range(0, length, step):
        stop = min(start + target, length)
        windows.append((start, stop))
        if stop == length:
            break
    return windows


def _overflow_windows(
    first: np.ndarray,
    second: np.ndarray | None,
    targets: tuple[np.ndarray, np.ndarray | None],
    stride: int,
) -> WindowPlan:
    rows: list[tuple[int, int, int, int, int]] = []
    for index in range(len(first)):
        first_windows = _checked_windows(int(first[index]), int(targets[0][index]), stride, index, "first")
        if second is None:
            rows.extend((index, start, stop, 0, 0) for start, stop in first_windows)
            continue
        second_windows = _checked_windows(int(second[index]), int(targets[1][index]), stride, index, "second")
        rows.extend((index, *a, *b) for a, b in _pair_window_order(first_windows, second_windows))
    table = np.array(rows, dtype=np.int64).reshape(-1, 5)
    if second is None:
        return WindowPlan(table[:, 0], table[:, 1], table[:, 2], None, None)
    return WindowPlan(table[:, 0], table[:, 1], table[:, 2], table[:, 3], table[:, 4])


def _checked_windows(length: int, target: int, stride: int, index: int, which: str) -> list[tuple[int, int]]:
    if target < length and stride >= target:
        raise ValueError(
            f"example {index}: stride={stride} must be smaller than the {target} tokens of the {which} "
            f"sequence that fit in max_length (after special tokens); lower stride or raise max_length"
        )
    return sequence_windows(length, target, stride)


def _pair_window_order(
    first: list[tuple[int, int]], second: list[tuple[int, int]]
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The order ``Encoding::merge_with`` produces: the main pair, then every later first-window with
    every second-window, then the first window with the later second-windows."""
    order = [(first[0], second[0])]
    order += [(a, b) for a in first[1:] for b in second]
    order += [(first[0], b) for b in second[1:]]
    return order
