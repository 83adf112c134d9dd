"""Scan over layers, remat, and dropout: the mechanics around the numbers."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import xlmr_jax
from xlmr_jax import XLMRobertaConfig

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=20)
IDS = np.array([[0, 5, 6, 7, 2, 1], [0, 8, 9, 2, 1, 1]])
MASK = (IDS != 1).astype(np.int32)


def test_program_size_does_not_grow_with_depth():
    """Layers are scanned: a 12-layer model traces to the same program as a 2-layer one."""
    def equations(layers):
        model = xlmr_jax.XLMRobertaForMaskedLM(XLMRobertaConfig(**{**TINY, "num_hidden_layers": layers}))
        graphdef, state = nnx.split(model)
        jaxpr = jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(IDS, MASK).logits)(state)
        return len(jaxpr.jaxpr.eqns)

    assert equations(2) == equations(12)


def test_params_are_stacked_on_a_layer_axis():
    model = xlmr_jax.XLMRobertaModel(XLMRobertaConfig(**{**TINY, "num_hidden_layers": 5}))
    assert model.encoder.layer.attention.self.query.kernel[...].shape == (5, 16, 16)
    assert model.encoder.layer.intermediate.dense.kernel[...].shape == (5, 16, 24)


def test_remat_changes_memory_not_numbers():
    config = XLMRobertaConfig(**TINY, model_type="xlm-roberta-xl")
    plain = xlmr_jax.XLMRobertaForMaskedLM(config, rngs=nnx.Rngs(1))
    remat = xlmr_jax.XLMRobertaForMaskedLM(config.replace(remat=True), rngs=nnx.Rngs(1))

    def loss(model):
        return model(IDS, MASK, labels=IDS).loss

    g_plain = jax.tree.leaves(nnx.state(nnx.grad(loss)(plain)))
    g_remat = jax.tree.leaves(nnx.state(nnx.grad(loss)(remat)))
    for a, b in zip(g_plain, g_remat, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_dropout_only_when_asked_and_reproducible():
    model = xlmr_jax.XLMRobertaModel(XLMRobertaConfig(**TINY, hidden_dropout_prob=0.3,
                                                      attention_probs_dropout_prob=0.3))
    a = model(IDS, MASK).last_hidden_state
    b = model(IDS, MASK).last_hidden_state
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # eval by default
    k1, k2 = jax.random.key(1), jax.random.key(2)
    d1 = model(IDS, MASK, deterministic=False, dropout_rng=k1).last_hidden_state
    d1_again = model(IDS, MASK, deterministic=False, dropout_rng=k1).last_hidden_state
    d2 = model(IDS, MASK, deterministic=False, dropout_rng=k2).last_hidden_state
    np.testing.assert_array_equal(np.asarray(d1), np.asarray(d1_again))
    assert not np.allclose(np.asarray(d1), np.asarray(d2))
    assert not np.allclose(np.asarray(d1), np.asarray(a))
    # nothing was mutated: the eval view is unchanged after training-mode calls
    np.testing.assert_array_equal(np.asarray(model(IDS, MASK).last_hidden_state), np.asarray(a))


def test_zero_dropout_rates_make_training_mode_deterministic():
    model = xlmr_jax.XLMRobertaModel(XLMRobertaConfig(**TINY, hidden_dropout_prob=0.0,
                                                      attention_probs_dropout_prob=0.0))
    a = model(IDS, MASK).last_hidden_state
    b = model(IDS, MASK, deterministic=False, dropout_rng=jax.random.key(0)).last_hidden_state
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_jit_forward_equals_eager_and_returns_only_outputs():
    model = xlmr_jax.XLMRobertaForSequenceClassification(XLMRobertaConfig(**TINY))
    forward = xlmr_jax.jit_forward(model)
    np.testing.assert_allclose(np.asarray(forward(IDS, MASK).logits), np.asarray(model(IDS, MASK).logits),
                               atol=1e-6)
    # nothing but the output dataclass leaves the compiled function (no copy of the params)
    assert len(jax.tree.leaves(forward(jnp.asarray(IDS), jnp.asarray(MASK)))) == 1
    with_states = xlmr_jax.jit_forward(model, output_hidden_states=True)
    assert len(with_states(IDS, attention_mask=MASK).hidden_states) == 3
    loss = xlmr_jax.jit_forward(model, deterministic=False)(IDS, MASK, labels=np.array([0, 1]),
                                                            dropout_rng=jax.random.key(0)).loss
    assert np.isfinite(float(loss))
