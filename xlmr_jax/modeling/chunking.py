"""The feed-forward block over chunks of the sequence, one after another.

On CPU the block's intermediate (tokens x 4h, 50 MB at base size and 32 x 128) does not fit the
processor's cache: the up-projection writes it to memory, GELU reads and writes it, the
down-projection reads it again. Run over chunks of ~1024 tokens, each chunk's intermediate stays in
cache between the three (XLA CPU, base sizes, forward: 0.93-0.94x the time at 32 x 128, 0.94x at
8 x 512). A train step gains nothing (its backward keeps the activations anyway), and on
accelerators one large matmul is the better shape, so the automatic choice chunks only inference
on CPU. Chunks are slices of the sequence axis, so a batch split over devices stays split.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from xlmr_jax.modeling.attention_choice import default_target
from xlmr_jax.modeling.layers import fold_key
from xlmr_jax.sharding import batch_shards

# Tokens per chunk for the automatic choice: the (tokens, 3072) fp32 intermediate of a base model
# is then 12.6 MB, within this AMD EPYC's L3 share; at 8 x 128 (1024 tokens) nothing is chunked,
# and splitting that batch further measured no faster.
AUTO_CHUNK_TOKENS = 1024


def feed_forward_chunks(batch: int, length: int, chunk_tokens: int | None, *, deterministic: bool) -> int:
    """Into how many slices of the sequence axis the feed-forward block is split (1: not at all).

    `chunk_tokens` is `XLMRobertaConfig.ffn_chunk_tokens`: None automatic (inference on CPU, chunks
    of `AUTO_CHUNK_TOKENS`), 0 never, else the most tokens a chunk may hold (per device, where the
    batch is split over a mesh). The count divides `length`, so all chunks have one shape; where no
    divisor gets a chunk that small, every position is its own chunk."""
    if chunk_tokens is None:
        if not deterministic or default_target()[0] != "cpu":
            return 1
        chunk_tokens = AUTO_CHUNK_TOKENS
    if chunk_tokens == 0:
        return 1
    shards = batch_shards()
    tokens = (batch // shards if batch % shards == 0 else batch) * length
    for count in range(1, length + 1):
        if length % count == 0 and tokens // count <= chunk_tokens:
            return count
    return length


def chunked_feed_forward(
    feed_forward: Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array],
    ffn_input: jax.Array,
    residual: jax.Array,
    *,
    chunks: int,
    dropout_rng: jax.Array | None,
) -> jax.Array:
    """`feed_forward(ffn_input, residual, dropout_rng)` on (batch, length, hidden) arrays, run as a
    loop over `chunks` slices of the length axis. Each chunk's dropout key is `dropout_rng` folded
    with the chunk's index, so with dropout on the masks differ from the unchunked block's."""
    if chunks == 1:
        return feed_forward(ffn_input, residual, dropout_rng)
    batch, length = ffn_input.shape[:2]

    def split(x: jax.Array) -> jax.Array:  # (batch, length, h) -> (chunks, batch, length / chunks, h)
        return jnp.moveaxis(x.reshape(batch, chunks, length // chunks, *x.shape[2:]), 1, 0)

    def one_chunk(xs):
        chunk_input, chunk_residual, index = xs
        return feed_forward(chunk_input, chunk_residual, fold_key(dropout_rng, index))

    out = jax.lax.map(one_chunk, (split(ffn_input), split(residual), jnp.arange(chunks)))
    return jnp.moveaxis(out, 0, 1).reshape(batch, length, *out.shape[3:])
