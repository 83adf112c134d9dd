"""Losses of the reference's heads, always computed in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

IGNORE_INDEX = -100


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE_INDEX,
                  name: str = "labels") -> jax.Array:
    """Mean cross-entropy over labels != ignore_index (torch's CrossEntropyLoss).

    Where every label is ignored torch returns NaN; this returns 0 so that one empty batch does not
    poison a training run (the one deliberate difference from the reference). A label outside
    [0, classes) other than `ignore_index` raises when concrete and makes the loss NaN under jit
    (never a wrapped or clamped class).
    """
    classes = logits.shape[-1]
    logits = logits.reshape(-1, classes).astype(jnp.float32)
    labels = labels.reshape(-1)
    check_label_values(name, labels, classes, ignore_index)
    ignored = labels == ignore_index
    in_range = (labels >= 0) & (labels < classes)
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(in_range, labels, 0))
    per_token = jnp.where(in_range, per_token, jnp.where(ignored, 0.0, jnp.nan))
    return jnp.sum(per_token) / jnp.maximum(jnp.sum(~ignored), 1)


def check_label_values(name: str, labels, classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Concrete labels outside [0, classes) other than `ignore_index` raise, naming `name`; traced ones
    pass (the loss turns them into NaN). Models call it before their compiled forward."""
    if isinstance(labels, jax.core.Tracer) or labels.size == 0:
        return
    values = np.asarray(labels)
    bad = values[(values != ignore_index) & ((values < 0) | (values >= classes))]
    if bad.size:
        raise ValueError(f"{name}: values must lie in [0, {classes - 1}] or be {ignore_index} (ignored), "
                         f"got {np.unique(bad)[:5].tolist()}")


def causal_lm_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Next-token loss: position t predicts labels[t + 1]; the last position has no target."""
    return cross_entropy(logits[:, :-1], labels[:, 1:])


def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    diff = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
    return jnp.mean(jnp.square(diff))


def binary_cross_entropy_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets.astype(jnp.float32)))


def sequence_classification_loss(
    logits: jax.Array, labels: jax.Array, num_labels: int, problem_type: str | None
) -> jax.Array:
    """The reference's problem_type rule: one label -> regression (MSE); integer labels ->
    single-label cross-entropy; anything else -> multi-label BCE-with-logits."""
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif jnp.issubdtype(labels.dtype, jnp.integer):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        if num_labels == 1:
            return mse(jnp.squeeze(logits), jnp.squeeze(labels))
        return mse(logits, labels)
    if problem_type == "single_label_classification":
        return cross_entropy(logits, labels)
    return binary_cross_entropy_with_logits(logits, labels)


def span_loss(start_logits, end_logits, start_positions, end_positions) -> jax.Array:
    """QA loss: positions clamped to [0, length]; `length` itself is ignored (out of the window)."""
    length = start_logits.shape[1]
    start_positions = jnp.clip(start_positions.reshape(-1), 0, length)
    end_positions = jnp.clip(end_positions.reshape(-1), 0, length)
    start = cross_entropy(start_logits, start_positions, ignore_index=length)
    end = cross_entropy(end_logits, end_positions, ignore_index=length)
    return (start + end) / 2
