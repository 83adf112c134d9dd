"""Static-shape key/value cache for incremental decoding with the scanned encoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
    """Keys and values of every layer, stacked on a leading layer axis.

    `key`/`value`: (layers, batch, max_length, heads, head_dim); `index`: how many positions are
    filled (an int32 scalar, so that jitted decoding steps keep one static shape).
    `cross_key`/`cross_value` (layers, batch, encoder_length, heads, head_dim) hold the projected
    encoder states when the model has cross-attention; they are computed once, by `init_cache`.
    """

    key: jax.Array
    value: jax.Array
    index: jax.Array
    cross_key: jax.Array | None = None
    cross_value: jax.Array | None = None

    @property
    def max_length(self) -> int:
        return self.key.shape[2]

    @property
    def batch_size(self) -> int:
        return self.key.shape[1]

    @classmethod
    def empty(
        cls, num_layers: int, batch_size: int, max_length: int, num_heads: int, head_dim: int, dtype
    ) -> KVCache:
        shape = (num_layers, batch_size, max_length, num_heads, head_dim)
        return cls(
            key=jnp.zeros(shape, dtype), value=jnp.zeros(shape, dtype), index=jnp.zeros((), jnp.int32)
        )


def update_layer(
    stacked: tuple[jax.Array, jax.Array], layer: jax.Array, index: jax.Array, key: jax.Array, value: jax.Array
) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """Write one layer's new keys/values (batch, length, heads, head_dim) at position `index` of the
    stacked (layers, batch, max_length, heads, head_dim) cache.

    Returns (that layer's keys/values over the whole cache, the updated stack). Only the new
    positions are written: carried through the layer scan and the decoding loop, the stack is
    updated in place, never rebuilt."""
    start = (layer, 0, index, 0, 0)
    updated = tuple(
        jax.lax.dynamic_update_slice(buffer, new[None].astype(buffer.dtype), start)
        for buffer, new in zip(stacked, (key, value), strict=True)
    )
    current = tuple(jax.lax.dynamic_index_in_dim(buffer, layer, axis=0, keepdims=False) for buffer in updated)
    return current, updated
