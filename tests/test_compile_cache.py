"""Eager is not a trap: a model called outside jit reuses compiled code, copies no parameter, and
still checks its inputs eagerly; inside a transformation it is traced inline."""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_log import compile_log
from flax import nnx

import xlmr_jax
from xlmr_jax import XLMRobertaConfig
from xlmr_jax.modeling import compiled

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=20)
IDS = np.array([[0, 5, 6, 7, 2, 1], [0, 8, 9, 2, 1, 1]])
MASK = (IDS != 1).astype(np.int32)


def other_ids():
    """Same shapes as IDS, other values: the values never enter the cache key."""
    ids = IDS.copy()
    ids[:, 1:3] = [[11, 12], [13, 14]]
    return ids


def calls():
    """(name, model factory, call) for every model class, with labels where the class takes them."""
    config = XLMRobertaConfig(**TINY)
    decoder, three = config.replace(is_decoder=True), config.replace(num_labels=3)
    labels = np.array([0, 2])
    return [
        ("XLMRobertaModel", lambda: xlmr_jax.XLMRobertaModel(config),
         lambda m, ids: m(ids, MASK, output_attentions=True)),
        ("XLMRobertaForMaskedLM", lambda: xlmr_jax.XLMRobertaForMaskedLM(config),
         lambda m, ids: m(ids, MASK, labels=ids)),
        ("XLMRobertaForCausalLM", lambda: xlmr_jax.XLMRobertaForCausalLM(decoder),
         lambda m, ids: m(ids, MASK, labels=ids)),
        ("XLMRobertaForSequenceClassification", lambda: xlmr_jax.XLMRobertaForSequenceClassification(three),
         lambda m, ids: m(ids, MASK, labels=labels)),
        ("XLMRobertaForTokenClassification", lambda: xlmr_jax.XLMRobertaForTokenClassification(three),
         lambda m, ids: m(ids, MASK, labels=np.where(MASK == 1, 1, -100))),
        ("XLMRobertaForMultipleChoice", lambda: xlmr_jax.XLMRobertaForMultipleChoice(config),
         lambda m, ids: m(ids[None], MASK[None], labels=np.array([1]))),
        ("XLMRobertaForQuestionAnswering", lambda: xlmr_jax.XLMRobertaForQuestionAnswering(config),
         lambda m, ids: m(ids, MASK, start_positions=np.array([1, 2]), end_positions=np.array([3, 9]))),
    ]


@pytest.mark.parametrize(("name", "build", "call"), [pytest.param(*c, id=c[0]) for c in calls()])
def test_second_eager_call_with_the_same_shapes_compiles_nothing(name, build, call):
    model = build()
    compiled.clear_cache()  # whatever an earlier test compiled, this call compiles afresh
    with compile_log() as first:
        expected = call(model, IDS)
    assert any(name in program for program in first), first  # the log does see our compiles
    with compile_log() as second:
        out = call(model, other_ids())
        jax.block_until_ready(out)
    assert second == [], f"{name}: a second eager call compiled {second}"
    # the cached program computes the new values, and the same outputs as a traced call
    assert jax.tree.structure(out) == jax.tree.structure(expected)
    traced = nnx.jit(lambda m, ids: call(m, ids))(model, other_ids())
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(traced), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_new_options_compile_once_each_and_old_ones_are_reused():
    model = xlmr_jax.XLMRobertaForMaskedLM(XLMRobertaConfig(**TINY))
    model(IDS, MASK)
    with compile_log() as log:
        with_states = model(IDS, MASK, output_hidden_states=True)
    assert log, "a new option is a new program"
    assert len(with_states.hidden_states) == TINY["num_hidden_layers"] + 1
    with compile_log() as log:
        model(IDS, MASK)
        model(other_ids(), MASK, output_hidden_states=True)
    assert log == []


def test_eager_call_copies_no_parameter_and_the_cache_pins_none():
    model = xlmr_jax.XLMRobertaForMaskedLM(XLMRobertaConfig(**TINY))
    model(IDS, MASK)  # compiled
    params = jax.tree.leaves(nnx.state(model))
    before = jax.live_arrays()  # held, so that no id is reused by a new array
    out = model(IDS, MASK)
    known = {id(x) for x in before}
    new = [x for x in jax.live_arrays() if id(x) not in known]
    # what the call leaves alive is its outputs, nothing else (no parameter handed back out) ...
    assert {id(x) for x in new} == {id(x) for x in jax.tree.leaves(out)}
    # ... and the module still holds the very same parameter arrays
    assert [id(x) for x in jax.tree.leaves(nnx.state(model))] == [id(x) for x in params]
    # the compiled-program cache keys on structure, not arrays: a dropped model is freed
    ref = weakref.ref(model.roberta.embeddings.word_embeddings.embedding[...])
    del model, params, out, before, new
    gc.collect()
    assert ref() is None
    assert compiled._compiled.cache_info().maxsize == compiled.MAX_CACHED_PROGRAMS


def test_updated_parameters_are_used_without_recompiling():
    model = xlmr_jax.XLMRobertaForMaskedLM(XLMRobertaConfig(**TINY))
    before = np.asarray(model(IDS, MASK).logits)
    with compile_log() as log:
        nnx.update(model, jax.tree.map(lambda x: x * 1.5, nnx.state(model)))
        after = np.asarray(model(IDS, MASK).logits)
    assert not np.allclose(before, after)
    assert not [program for program in log if "forward" in program]


def test_values_are_still_checked_eagerly():
    model = xlmr_jax.XLMRobertaForMaskedLM(XLMRobertaConfig(**TINY))
    model(IDS, MASK, labels=IDS)  # compiled: the checks must not live only in the first trace
    with pytest.raises(ValueError, match=r"input_ids: values must lie in \[0, 49\]"):
        model(np.where(IDS == 5, 50, IDS), MASK)
    with pytest.raises(ValueError, match=r"labels: values must lie in \[0, 49\] or be -100"):
        model(IDS, MASK, labels=np.where(IDS == 5, 50, IDS))
    with pytest.raises(ValueError, match="deterministic=False needs dropout_rng"):
        model(IDS, MASK, deterministic=False)


def test_gradients_and_transformations_trace_inline():
    model = xlmr_jax.XLMRobertaForSequenceClassification(XLMRobertaConfig(**TINY).replace(num_labels=3))
    labels = np.array([0, 2])
    eager_loss = float(model(IDS, MASK, labels=labels).loss)

    def loss_fn(m):
        return m(IDS, MASK, labels=labels).loss

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    np.testing.assert_allclose(float(loss), eager_loss, rtol=1e-6)
    norms = [float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and sum(n > 0 for n in norms) > len(norms) // 2

    batched = jax.vmap(lambda ids, mask: model(ids, mask).logits)(np.stack([IDS, IDS]), np.stack([MASK] * 2))
    np.testing.assert_allclose(np.asarray(batched[1]), np.asarray(model(IDS, MASK).logits), atol=1e-5)
    closed_over = jax.jit(lambda ids: model(ids, MASK).logits)(IDS)  # params concrete, inputs traced
    np.testing.assert_allclose(np.asarray(closed_over), np.asarray(model(IDS, MASK).logits), atol=1e-5)


def test_dropout_runs_through_the_compiled_call():
    model = xlmr_jax.XLMRobertaModel(XLMRobertaConfig(**TINY))
    k1, k2 = jax.random.key(1), jax.random.key(2)
    d1 = np.asarray(model(IDS, MASK, deterministic=False, dropout_rng=k1).last_hidden_state)
    with compile_log() as log:
        d1_again = np.asarray(model(IDS, MASK, deterministic=False, dropout_rng=k1).last_hidden_state)
        d2 = np.asarray(model(IDS, MASK, deterministic=False, dropout_rng=k2).last_hidden_state)
    assert not [program for program in log if "forward" in program]
    np.testing.assert_array_equal(d1, d1_again)  # the same program on the same key
    assert not np.allclose(d1, d2)
    traced = xlmr_jax.jit_forward(model, deterministic=False)(IDS, MASK, dropout_rng=k1).last_hidden_state
    np.testing.assert_allclose(d1, np.asarray(traced), atol=1e-5)
