"""What generation costs: the KV cache is updated in place (each step writes only its own position,
nothing rebuilds the cache), and new sampling values reuse the compiled loop."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_log import compile_log
from flax import nnx

import xlmr_jax
from xlmr_jax import XLMRobertaConfig, generation

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=40, is_decoder=True)
BATCH, PROMPT, NEW = 2, 5, 12


def compiled_generate_hlo(model) -> str:
    graphdef, state = nnx.split(model)
    ids = jnp.full((BATCH, PROMPT), 7, jnp.int32)
    lowered = generation._generate.lower(
        graphdef, state, ids, jnp.ones_like(ids), jax.random.key(0), None, None, None, jnp.int32(2),
        max_new_tokens=NEW,
    )
    return lowered.compile().as_text()


def parse_hlo(text: str):
    """(shape of every instruction by name, computation of every instruction, computations each
    computation calls, and the loop bodies) of an optimised HLO module."""
    shapes, where, calls, bodies = {}, {}, {}, set()
    computation = None
    for line in text.splitlines():
        header = re.match(r"(?:ENTRY )?%([\w.\-]+) \(.*\{$", line)
        if header:
            computation = header[1]
            calls[computation] = set()
            continue
        instruction = re.match(r"\s+(?:ROOT )?%([\w.\-]+) = (\w+\[[\d,]*\])", line)
        if instruction and computation is not None:
            shapes[instruction[1]] = instruction[2]
            where[instruction[1]] = computation
        for kind, callee in re.findall(r"(calls|body|condition|to_apply)=%([\w.\-]+)", line):
            calls[computation].add(callee)
            if kind == "body":
                bodies.add(callee)
    return shapes, where, calls, bodies


def reachable(calls, roots):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(calls.get(name, ()))
    return seen


def test_decoding_writes_only_the_new_positions_into_the_cache():
    config = XLMRobertaConfig(**TINY)
    model = xlmr_jax.XLMRobertaForCausalLM(config)
    text = compiled_generate_hlo(model)
    shapes, where, calls, bodies = parse_hlo(text)
    heads, head_dim = config.num_attention_heads, config.head_dim
    stack = f"f32[{config.num_hidden_layers},{BATCH},{PROMPT + NEW},{heads},{head_dim}]"

    # every write into the stacked cache is one layer's new positions: the prompt, then one token
    updates = []
    for name, source, update in re.findall(
        r"%([\w.\-]+) = f32\[[\d,]+\]\{[\d,]+\} dynamic-update-slice\(%([\w.\-]+), %([\w.\-]+)", text
    ):
        if shapes[name] == stack:
            updates.append(shapes[update])
    written = {f"f32[1,{BATCH},{PROMPT},{heads},{head_dim}]", f"f32[1,{BATCH},1,{heads},{head_dim}]"}
    assert updates and set(updates) == written, updates

    # and inside the loops nothing builds or copies a cache-sized buffer (the zeros are made once)
    in_loops = reachable(calls, bodies)
    built = [name for name, shape in shapes.items()
             if shape == stack and where[name] in in_loops
             and re.search(rf"%{re.escape(name)} = \S+ (copy|broadcast|concatenate|pad)\(", text)]
    assert built == [], built


def test_new_sampling_values_reuse_the_compiled_loop():
    model = xlmr_jax.XLMRobertaForCausalLM(XLMRobertaConfig(**TINY))
    prompt = np.array([[0, 5, 6, 7], [0, 8, 9, 10]])
    key = jax.random.key(0)
    model.generate(prompt, 4, do_sample=True, temperature=0.7, top_k=5, top_p=0.9, rng=key, eos_token_id=2)
    model.generate(prompt, 4)  # greedy: its own program
    with compile_log() as log:
        a = model.generate(prompt, 4, do_sample=True, temperature=1.3, top_k=9, top_p=0.5, rng=key,
                           eos_token_id=3)
        b = model.generate(prompt, 4, do_sample=True, temperature=0.2, top_k=2, top_p=0.99, rng=key,
                           eos_token_id=4)
        model.generate(prompt, 4, eos_token_id=5)
    assert log == [], log
    assert a.shape == b.shape == (2, 8)


@pytest.mark.parametrize(("top_k", "top_p"),
                         [(1, None), (3, None), (None, 0.3), (None, 1.0), (4, 0.5), (50, 0.9)])
def test_traced_top_k_and_top_p_keep_the_expected_tokens(top_k, top_p):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50)).astype(np.float32) * 3
    logits[0, 7] = logits[0, 8]  # a tie at a boundary is kept, as a filter by value does
    got = np.asarray(jax.jit(generation._filter)(
        jnp.asarray(logits), None if top_k is None else jnp.int32(top_k),
        None if top_p is None else jnp.float32(top_p),
    ))
    for row, kept in zip(logits, np.isfinite(got), strict=True):
        order = np.sort(row)[::-1]
        threshold = order[top_k - 1] if top_k is not None else -np.inf
        candidates = np.where(row >= threshold, row, -np.inf)
        if top_p is not None:
            ranked = np.sort(candidates)[::-1]
            probs = np.exp(ranked - ranked.max())
            probs /= probs.sum()
            # the smallest top set whose mass reaches top_p
            last = int(np.sum(np.cumsum(probs) < top_p))
            threshold = max(threshold, ranked[min(last, len(ranked) - 1)])
        np.testing.assert_array_equal(kept, row >= threshold)
