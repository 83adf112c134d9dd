"""Autoregressive generation for `XLMRobertaForCausalLM`: one jitted loop over a static KV cache.

The prompt is processed in one call (prefill), then `jax.lax.scan` runs one cached step per new
token, writing only that token's keys/values into the cache (in place). Every shape is static: a
(batch, prompt length, max_new_tokens) triple compiles once per decoding mode (greedy or sampled,
with or without top-k / top-p / EOS); the values of `temperature`, `top_k`, `top_p` and
`eos_token_id` are traced, so changing them reuses the compiled loop.
Prompts must be LEFT-padded (the last column holds real tokens); position ids count real tokens
only, so a padded row gets the same positions as it would alone, and every step sees the
positions that a full forward over the finished sequence would give.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlmr_jax.modeling import validation as v


def _filter(logits: jax.Array, top_k: jax.Array | None, top_p: jax.Array | None) -> jax.Array:
    """Top-k, then nucleus (top-p) filtering, from one descending sort; `top_k` and `top_p` are
    traced values, so a new value reuses the compiled loop."""
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    if top_k is not None:
        kth = jax.lax.dynamic_slice_in_dim(sorted_logits, top_k - 1, 1, axis=-1)
        logits = jnp.where(logits < kth, -jnp.inf, logits)
        sorted_logits = jnp.where(sorted_logits < kth, -jnp.inf, sorted_logits)
    if top_p is not None:
        # keep the smallest set of tokens whose probability reaches p: the first sorted index at
        # which the mass reaches p is the last one kept
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        cutoff_index = jnp.sum(cumulative < top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def _choose(logits, rng, sampling):
    logits = logits.astype(jnp.float32)
    if sampling is None:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / sampling["temperature"]
    if sampling["top_k"] is not None or sampling["top_p"] is not None:
        logits = _filter(logits, sampling["top_k"], sampling["top_p"])
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens"))
def _generate(graphdef, state, input_ids, attention_mask, rng, encoder_hidden_states, encoder_attention_mask,
              sampling, eos_token_id, *, max_new_tokens):
    # The params come in as an argument and only the ids go out (see xlmr_jax/jit.py for why).
    # `sampling` (None: greedy) and `eos_token_id` are traced: whether each is given shapes the
    # program, their values do not.
    model = nnx.merge(graphdef, state)
    pad = model.config.pad_token_id
    batch, prompt_length = input_ids.shape
    total = prompt_length + max_new_tokens
    cache = model.init_cache(batch, total, encoder_hidden_states=encoder_hidden_states)
    mask = jnp.zeros((batch, total), jnp.int32).at[:, :prompt_length].set(attention_mask)
    positions = jnp.cumsum(attention_mask, axis=1) * attention_mask + pad
    out = model(input_ids, mask, position_ids=positions, cache=cache,
                encoder_hidden_states=None if cache.cross_key is not None else encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask)
    real_tokens = jnp.sum(attention_mask, axis=1)

    def step(carry, step_rng):
        cache, logits, real_tokens, mask, done = carry
        token = _choose(logits, step_rng, sampling)
        token = jnp.where(done, pad, token)
        if eos_token_id is not None:
            done = done | (token == eos_token_id)
        mask = jax.lax.dynamic_update_slice(mask, jnp.ones((batch, 1), jnp.int32), (0, cache.index))
        # Positions as the full forward would give the finished sequence: pads (a generated pad
        # id included) sit at the pad position and do not count.
        is_real = token != pad
        real_tokens = real_tokens + is_real
        position = jnp.where(is_real, real_tokens + pad, pad)
        out = model(token[:, None], mask, position_ids=position[:, None], cache=cache,
                    encoder_attention_mask=encoder_attention_mask)
        return (out.cache, out.logits[:, -1], real_tokens, mask, done), token

    carry = (out.cache, out.logits[:, -1], real_tokens, mask, jnp.zeros((batch,), bool))
    _, new_tokens = jax.lax.scan(step, carry, jax.random.split(rng, max_new_tokens))
    return jnp.concatenate([input_ids.astype(jnp.int32), new_tokens.T], axis=1)


def generate(
    model,
    input_ids,
    max_new_tokens: int,
    *,
    attention_mask=None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: jax.Array | None = None,
    eos_token_id: int | None = -1,
    encoder_hidden_states=None,
    encoder_attention_mask=None,
) -> jax.Array:
    """Continue left-padded prompts (batch, length) by `max_new_tokens` tokens.

    Greedy by default; `do_sample=True` samples (with `temperature`, `top_k`, `top_p`) and needs
    `rng`. After `eos_token_id` (default: the config's; None to never stop) a row emits pad ids.
    Returns (batch, length + max_new_tokens) int32 ids: the prompt followed by the new tokens.
    """
    cfg = model.config
    input_ids = v.check_integer("input_ids", input_ids, rank=2)
    v.check_range("input_ids", input_ids, 0, cfg.vocab_size)
    if attention_mask is None:
        attention_mask = np.ones(input_ids.shape, np.int32)
    attention_mask = v.check_integer_or_bool_mask("attention_mask", attention_mask, input_ids.shape)
    if v.is_concrete(attention_mask) and not np.all(np.asarray(attention_mask)[:, -1]):
        raise ValueError("attention_mask: generate needs left-padded prompts (the last column must be real tokens)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    total = input_ids.shape[1] + max_new_tokens
    if total > cfg.max_sequence_length:
        raise ValueError(f"prompt length {input_ids.shape[1]} + max_new_tokens {max_new_tokens} = {total} exceeds "
                         f"the model's {cfg.max_sequence_length} positions")
    if do_sample:
        if rng is None:
            raise ValueError("do_sample=True needs rng=jax.random.key(...)")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and not 1 <= top_k <= cfg.vocab_size:
            raise ValueError(f"top_k must be in [1, {cfg.vocab_size}], got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    rng = rng if rng is not None else jax.random.key(0)
    if eos_token_id == -1:
        eos_token_id = cfg.eos_token_id
    sampling = None
    if do_sample:
        sampling = dict(temperature=jnp.float32(temperature),
                        top_k=None if top_k is None else jnp.int32(top_k),
                        top_p=None if top_p is None else jnp.float32(top_p))
    graphdef, state = nnx.split(model)
    return _generate(
        graphdef, state, jnp.asarray(input_ids, jnp.int32), jnp.asarray(attention_mask, jnp.int32), rng,
        encoder_hidden_states, None if encoder_attention_mask is None else jnp.asarray(encoder_attention_mask),
        sampling, None if eos_token_id is None else jnp.int32(eos_token_id), max_new_tokens=max_new_tokens,
    )
