"""Argument checks that turn bad input into an error naming the argument.

Shapes and dtypes are static, so they are checked under jit too. Values (token ids in range)
are checked only when the array is concrete (an eager call); under jit an out-of-range id
yields NaN through the embedding lookup instead of a silently clamped row.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def as_array(name: str, x: Any) -> jax.Array | np.ndarray:
    if isinstance(x, (jax.Array, np.ndarray)):
        return x
    try:
        return np.asarray(x)
    except Exception as err:  # noqa: BLE001 - re-raised with the argument's name
        raise TypeError(f"{name}: expected an array, got {type(x).__name__} ({err})") from None


def check_integer(name: str, x, shape: tuple[int, ...] | None = None, rank: int | None = None):
    x = as_array(name, x)
    if not (jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool):
        raise TypeError(f"{name}: expected an integer array, got dtype {x.dtype}")
    if rank is not None and x.ndim != rank:
        raise ValueError(f"{name}: expected rank {rank} (batch, length), got shape {tuple(x.shape)}")
    if rank is not None:  # only the main input is given by rank: it fixes the batch and the length
        check_not_empty(name, x)
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
    return x


def check_range(name: str, x, low: int, high: int) -> None:
    """Values in [low, high), checked when concrete."""
    if not is_concrete(x) or x.size == 0:
        return
    values = np.asarray(x)  # one device-to-host copy for both bounds
    lo, hi = int(values.min()), int(values.max())
    if lo < low or hi >= high:
        raise ValueError(f"{name}: values must lie in [{low}, {high - 1}], got min {lo} and max {hi}")


def check_not_empty(name: str, x) -> None:
    """A batch of no sequences, or sequences of no tokens, has no answer (and breaks reshapes)."""
    if 0 in x.shape:
        raise ValueError(f"{name}: expected at least one sequence of at least one token, "
                         f"got shape {tuple(x.shape)}")


def check_float(name: str, x, shape: tuple[int, ...]):
    x = as_array(name, x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a float array, got dtype {x.dtype}")
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
    check_not_empty(name, x)
    return x


def check_real_lengths(name: str, input_ids, pad_token_id: int, max_length: int) -> None:
    """Tokens other than pads must fit the position table; pads take the pad's own position, so a
    padded width beyond it is fine (as in the reference). Checked when concrete; under jit a
    position beyond the table gives NaN rows through the embedding lookup."""
    if not is_concrete(input_ids) or input_ids.size == 0:
        return
    longest = int(np.max(np.sum(np.asarray(input_ids) != pad_token_id, axis=-1)))
    if longest > max_length:
        raise ValueError(f"{name}: input length {longest} exceeds the model's {max_length} positions "
                         "(pads not counted)")


def check_host_ids(name: str, x) -> None:
    """A host (numpy) integer array going into jit: without x64 jax casts int64 to int32 (uint64 to
    uint32), so larger values would wrap to small, valid-looking ids; refuse them before the cast."""
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "iu" or x.size == 0:
        return
    target = np.iinfo(jax.dtypes.canonicalize_dtype(x.dtype))
    if target.bits >= x.dtype.itemsize * 8:
        return  # kept as is: nothing can wrap
    lo, hi = int(x.min()), int(x.max())
    if lo < target.min or hi > target.max:
        raise ValueError(f"{name}: values must fit in {target.dtype} (jit casts {x.dtype} to it), "
                         f"got min {lo} and max {hi}")


def check_labels(name: str, x, allowed_shapes: list[tuple[int, ...]], integer: bool | None = None):
    """`integer`: True -> must be integer, False -> must be float, None -> either."""
    x = as_array(name, x)
    if tuple(x.shape) not in [tuple(s) for s in allowed_shapes]:
        expected = " or ".join(str(tuple(s)) for s in allowed_shapes)
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")
    is_int = jnp.issubdtype(x.dtype, jnp.integer)
    if integer is True and not is_int:
        raise TypeError(f"{name}: expected integer class ids, got dtype {x.dtype}")
    if integer is False and is_int:
        raise TypeError(f"{name}: expected float targets, got dtype {x.dtype}")
    return x


def check_integer_or_bool_mask(name: str, x, shape: tuple[int, ...]):
    """Attention masks: 1/True = attend, 0/False = padding; integer, bool or float 0/1."""
    x = as_array(name, x)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
    return x
