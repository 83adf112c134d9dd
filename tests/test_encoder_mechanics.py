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
    """`remat=True` wraps each scanned layer in `jax.checkpoint`: the gradient keeps only each
    layer's input for the backward pass and recomputes the rest, so the compiled gradient needs
    less scratch memory (measured here: 0.46x), and gives the same numbers."""
    checkpoint = jax.make_jaxpr(jax.checkpoint(jnp.sin))(1.0).eqns[0].primitive.name  # "remat2" in jax 0.10
    config = XLMRobertaConfig(**TINY, model_type="xlm-roberta-xl")
    program, temp_bytes, grads = {}, {}, {}
    for remat in (False, True):
        model = xlmr_jax.XLMRobertaForMaskedLM(config.replace(remat=remat), rngs=nnx.Rngs(1))
        graphdef, state = nnx.split(model)

        def loss(state, graphdef=graphdef):
            return nnx.merge(graphdef, state)(IDS, MASK, labels=IDS).loss

        program[remat] = str(jax.make_jaxpr(loss)(state))
        compiled = jax.jit(jax.grad(loss)).lower(state).compile()
        analysis = compiled.memory_analysis()
        assert analysis is not None, f"no memory analysis of compiled programs on {jax.default_backend()}"
        temp_bytes[remat] = analysis.temp_size_in_bytes
        grads[remat] = jax.tree.leaves(compiled(state))
    assert f"{checkpoint}[" in program[True] and f"{checkpoint}[" not in program[False]
    assert temp_bytes[True] < 0.75 * temp_bytes[False], temp_bytes
    for a, b in zip(grads[False], grads[True], strict=True):
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


def assert_dropped(name: str, dropped, kept_from, rate: float, slack: float):
    """`dropped` is `kept_from` with a fraction `rate` (+- slack) of its non-zero entries zeroed and
    the others scaled by the inverse of the probability of keeping (inverted dropout: the expectation
    is unchanged)."""
    dropped, kept_from = np.asarray(dropped), np.asarray(kept_from)
    live = kept_from != 0
    kept = (dropped != 0) & live
    assert not np.any(dropped[~live]), f"{name}: dropout made a zero non-zero"
    fraction = 1.0 - kept.sum() / live.sum()
    assert abs(fraction - rate) <= slack, f"{name}: dropped {fraction:.3f} of the entries, rate {rate}"
    from xlmr_jax.modeling.layers import dropout_keep_probability

    keep_probability = dropout_keep_probability(rate)  # 1 - rate to a multiple of 2^-16
    np.testing.assert_allclose(dropped[kept], kept_from[kept] / keep_probability, rtol=1e-6, atol=1e-7,
                               err_msg=f"{name}: kept entries not scaled by 1 / {keep_probability}")


def test_dropout_drops_at_its_rate_and_scales_what_it_keeps():
    from xlmr_jax.modeling.layers import dropout

    x = jax.random.uniform(jax.random.key(0), (256, 512), minval=0.5, maxval=1.5)
    for rate in (0.1, 0.5):
        # 131072 entries: the dropped fraction has a standard deviation below 0.0014
        assert_dropped(f"dropout({rate})", dropout(x, rate, jax.random.key(1), False), x, rate, slack=0.01)
    np.testing.assert_array_equal(np.asarray(dropout(x, 0.5, jax.random.key(1), True)), np.asarray(x))


def test_dropout_keep_probability_is_16_bit_and_the_scale_is_its_inverse():
    from xlmr_jax.modeling.layers import dropout, dropout_keep_probability

    assert dropout_keep_probability(0.1) == 58982 / 65536
    assert dropout_keep_probability(0.5) == 0.5
    assert dropout_keep_probability(1 - 1e-9) == 1 / 65536  # never zero: the scale stays finite
    x = jax.random.uniform(jax.random.key(0), (64, 257), minval=0.5, maxval=1.5)  # odd last axis
    y = np.asarray(dropout(x, 0.1, jax.random.key(1), False))
    kept = y != 0
    # the kept entries are divided by the probability realised, so the expectation is exact (to an
    # ulp: XLA may multiply by the reciprocal; 1 / 0.9 would be 6.8e-6 off)
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / np.float32(58982 / 65536), rtol=2.4e-7, atol=0)
    # both halves of the last axis are drawn (each from its own half of the 32-bit words), and
    # independently: the two halves' masks agree about as often as two independent masks would
    left, right = kept[:, :128], kept[:, 128:256]
    assert 0.85 < left.mean() < 0.95 and 0.85 < right.mean() < 0.95
    assert abs((left == right).mean() - (0.9 * 0.9 + 0.1 * 0.1)) < 0.03
    assert float(dropout(jnp.float32(2.0), 0.5, jax.random.key(2), False)) in (0.0, 4.0)  # a scalar


def test_dropout_gradient_and_forward_mode():
    """The gradient is the cotangent masked and scaled as the forward was; forward-mode works too.
    Both barriers (the materialised keep mask, and the masked cotangent in the backward pass, which
    is the transpose of the barrier on the input) are in the programs: without them XLA kept the
    random bits for the backward pass and folded the mask into a strided transposing copy
    (measured: ~0.5 s of the base train step at 32 x 128)."""
    from xlmr_jax.modeling.layers import dropout

    x = jax.random.normal(jax.random.key(0), (8, 16, 32))
    w = jax.random.normal(jax.random.key(1), (8, 16, 32))
    key = jax.random.key(2)
    y = dropout(x, 0.2, key, False)
    grad = jax.grad(lambda x: (dropout(x, 0.2, key, False) * w).sum())(x)
    kept = np.asarray(y) != 0
    scale = np.asarray(y)[kept] / np.asarray(x)[kept]
    np.testing.assert_allclose(np.asarray(grad)[kept], np.asarray(w)[kept] * scale, rtol=1e-6)
    assert not np.any(np.asarray(grad)[~kept])
    _, tangent = jax.jvp(lambda x: dropout(x, 0.2, key, False), (x,), (w,))
    np.testing.assert_allclose(np.asarray(tangent), np.asarray(grad), rtol=1e-6)

    forward = jax.make_jaxpr(lambda x: dropout(x, 0.2, key, False))(x)
    barriers = [e for e in forward.jaxpr.eqns if e.primitive.name == "optimization_barrier"]
    assert any(v.aval.dtype == jnp.bool_ for e in barriers for v in e.outvars), forward
    backward = jax.make_jaxpr(jax.grad(lambda x: (dropout(x, 0.2, key, False) * w).sum()))(x)
    assert backward.jaxpr.eqns[-1].primitive.name == "optimization_barrier", backward


def test_model_dropout_uses_the_configured_rates():
    """hidden_dropout_prob on the embeddings' output, attention_probs_dropout_prob on the attention
    weights (returned after dropout, as the reference returns them), each checked with the other
    rate at zero so that the layer-0 input is the one of the eval run."""
    ids = np.tile(IDS, (64, 1))
    mask = (ids != 1).astype(np.int32)
    key = jax.random.key(3)

    hidden = xlmr_jax.XLMRobertaModel(XLMRobertaConfig(**TINY, hidden_dropout_prob=0.25,
                                                       attention_probs_dropout_prob=0.0))
    eval_states = hidden(ids, mask, output_hidden_states=True).hidden_states
    train_states = hidden(ids, mask, output_hidden_states=True, deterministic=False, dropout_rng=key).hidden_states
    # 6144 entries: standard deviation of the dropped fraction 0.0055
    assert_dropped("embeddings output", train_states[0], eval_states[0], 0.25, slack=0.03)

    attention = xlmr_jax.XLMRobertaModel(XLMRobertaConfig(**TINY, hidden_dropout_prob=0.0,
                                                          attention_probs_dropout_prob=0.4))
    eval_weights = attention(ids, mask, output_attentions=True).attentions
    train_weights = attention(ids, mask, output_attentions=True, deterministic=False, dropout_rng=key).attentions
    # 3456 non-zero weights (unmasked keys): standard deviation of the dropped fraction 0.0083
    assert_dropped("attention weights", train_weights[0], eval_weights[0], 0.4, slack=0.05)


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


def test_unrolled_layers_same_numbers_no_loop():
    """`unroll_layers=True` emits the layer scan as straight-line code (no while loop in the
    program): the same outputs and gradients up to rounding, with and without remat and dropout."""
    config = XLMRobertaConfig(**TINY, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    batch = dict(input_ids=IDS, attention_mask=MASK, labels=IDS)
    for remat in (False, True):
        results = {}
        for unroll in (False, True):
            model = xlmr_jax.XLMRobertaForMaskedLM(config.replace(remat=remat, unroll_layers=unroll),
                                                   rngs=nnx.Rngs(3))
            graphdef, state = nnx.split(model)

            def loss(state, graphdef=graphdef):
                out = nnx.merge(graphdef, state)(**batch, deterministic=False, dropout_rng=jax.random.key(5))
                return out.loss

            # (without dropout: the random-bit generator has loops of its own)
            forward = jax.jit(lambda s, g=graphdef: nnx.merge(g, s)(**batch).loss).lower(state).as_text()
            assert ("stablehlo.while" in forward) is (not unroll), (remat, unroll)
            value, grads = jax.jit(jax.value_and_grad(loss))(state)
            results[unroll] = (value, jax.tree.leaves(grads))
        np.testing.assert_allclose(float(results[True][0]), float(results[False][0]), rtol=1e-6)
        for a, b in zip(results[True][1], results[False][1], strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
