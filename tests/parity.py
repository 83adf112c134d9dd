"""Comparison helpers for parity tests: they assert, with the failing tensor named."""

from __future__ import annotations

import numpy as np
import torch

FP32_TOLERANCE = 1e-5
GRAD_RELATIVE_TOLERANCE = 1e-4


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().numpy()
    return np.asarray(x, dtype=np.float32)


def assert_close(name: str, ours, reference, mask: np.ndarray | None = None, atol: float = FP32_TOLERANCE):
    """max |ours - reference| <= atol, over the positions where `mask` (batch, length) is true."""
    a, b = to_numpy(ours), to_numpy(reference)
    assert a.shape == b.shape, f"{name}: shape {a.shape} vs reference {b.shape}"
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        a, b = a[mask], b[mask]
    assert np.all(np.isfinite(a)), f"{name}: non-finite values"
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    assert diff <= atol, f"{name}: max |diff| {diff:.3g} > {atol:.1g}"
    return diff


def assert_attention_close(name: str, ours, reference, mask: np.ndarray, atol: float = FP32_TOLERANCE):
    """Attention weights (batch, heads, queries, keys), compared at non-pad query rows."""
    a, b = to_numpy(ours), to_numpy(reference)
    assert a.shape == b.shape, f"{name}: shape {a.shape} vs reference {b.shape}"
    rows = np.asarray(mask).astype(bool)
    a, b = a.transpose(0, 2, 1, 3)[rows], b.transpose(0, 2, 1, 3)[rows]
    diff = float(np.max(np.abs(a - b)))
    assert diff <= atol, f"{name}: max |diff| {diff:.3g} > {atol:.1g}"


def assert_relative_close(name: str, ours, reference, rtol: float = GRAD_RELATIVE_TOLERANCE,
                          floor: float = 0.0):
    """max |ours - reference| <= rtol * max(max |reference|, floor), per tensor.

    `floor` (e.g. a small fraction of the largest gradient of the model) keeps tensors whose exact
    gradient is zero (attention key biases: softmax ignores a shift shared by all keys) from
    being compared on their rounding noise alone."""
    a, b = to_numpy(ours), to_numpy(reference)
    assert a.shape == b.shape, f"{name}: shape {a.shape} vs reference {b.shape}"
    scale = max(float(np.max(np.abs(b))), floor)
    diff = float(np.max(np.abs(a - b)))
    assert diff <= rtol * scale + 1e-12, f"{name}: max |diff| {diff:.3g} > {rtol:g} x max|ref| {scale:.3g}"


# Token ids picked by argmax in two different computations (cached steps vs a full forward, ours
# vs the reference, a padded batch vs a single row) may differ wherever two logits (nearly) tie,
# and which way a near-tie falls depends on the CPU's rounding. So a generated token is checked
# by teacher forcing: it must be a greedy choice of the logits computed on the generated sequence
# itself. Each side is within FP32_TOLERANCE of the other's logits (our cached logits vs our full
# forward, our full forward vs the reference), so our choice a of max logit is, in the other
# computation, at most 2 x 2 x FP32_TOLERANCE below that computation's best logit.
GREEDY_TOLERANCE = 4 * FP32_TOLERANCE


def assert_greedy_choices(name: str, sequences, logits, start: int, atol: float = GREEDY_TOLERANCE):
    """Every token of `sequences` (batch, length) from column `start` on is a greedy choice of
    `logits` (batch, length, vocab), computed on `sequences` themselves (teacher forcing): the
    token chosen at column t has logits[:, t - 1, token] >= max(logits[:, t - 1]) - atol."""
    seq = np.asarray(sequences)
    scores = to_numpy(logits)
    assert scores.shape[:2] == seq.shape, f"{name}: logits {scores.shape} for sequences {seq.shape}"
    assert 1 <= start < seq.shape[1], f"{name}: start {start} outside (0, {seq.shape[1]})"
    previous = scores[:, start - 1:-1]  # the logits that chose columns start .. length - 1
    chosen = np.take_along_axis(previous, seq[:, start:, None], axis=-1)[..., 0]
    shortfall = previous.max(axis=-1) - chosen
    assert np.all(np.isfinite(shortfall)), f"{name}: non-finite logits"
    row, step = np.unravel_index(np.argmax(shortfall), shortfall.shape)
    worst = float(shortfall[row, step])
    assert worst <= atol, (
        f"{name}: row {row}, column {start + step}: token {seq[row, start + step]} is {worst:.3g} below the "
        f"best logit (token {previous[row, step].argmax()}), more than {atol:.1g}: not a greedy choice"
    )
