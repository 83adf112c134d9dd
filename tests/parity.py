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
