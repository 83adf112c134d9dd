"""Which attention implementation runs where, and that the cuDNN call's arguments (key lengths,
causal flag, the right-padding guard) mean the same as the boolean masks, checked on CPU."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import xlmr_jax
from xlmr_jax.modeling import attention as attn
from xlmr_jax.modeling import attention_choice as ac
from xlmr_jax.modeling import compiled

HOPPER, AMPERE, TURING = (9, 0), (8, 0), (7, 5)
BASE = dict(platform="cuda", dtype=jnp.bfloat16, head_dim=64, mask_kind=ac.MASK_PADDING,
            compute_capability=HOPPER)

# (overrides of BASE, implementation, is_causal, key_lengths, guard, words of the reason)
NOTHING = (False, False, False)
TABLE = {
    "weights asked": (dict(wants_weights=True), ac.EXPLICIT, *NOTHING, "weights"),
    "weights asked, xla requested": (dict(wants_weights=True, requested="xla"), ac.EXPLICIT, *NOTHING, "weights"),
    "attention dropout": (dict(dropout_active=True), ac.EXPLICIT, *NOTHING, "dropout"),
    "attention dropout, fp32 on cpu": (dict(dropout_active=True, platform="cpu", dtype=jnp.float32),
                                       ac.EXPLICIT, *NOTHING, "dropout"),
    "xla requested": (dict(requested="xla"), ac.XLA, *NOTHING, "requested"),
    "cpu": (dict(platform="cpu"), ac.XLA, *NOTHING, "CUDA"),
    "tpu": (dict(platform="tpu"), ac.XLA, *NOTHING, "CUDA"),
    "rocm": (dict(platform="rocm"), ac.XLA, *NOTHING, "CUDA"),
    "fp32": (dict(dtype=jnp.float32), ac.XLA, *NOTHING, "float32"),
    "kv cache": (dict(has_cache=True), ac.XLA, *NOTHING, "cache"),
    "turing": (dict(compute_capability=TURING), ac.XLA, *NOTHING, "capability"),
    "unknown capability": (dict(compute_capability=None), ac.XLA, *NOTHING, "capability"),
    "head_dim 60": (dict(head_dim=60), ac.XLA, *NOTHING, "head_dim"),
    "head_dim 256 before hopper": (dict(head_dim=256, compute_capability=AMPERE), ac.XLA, *NOTHING, "128"),
    "head_dim 264 on hopper": (dict(head_dim=264), ac.XLA, *NOTHING, "256"),
    "other mask (a cache's offset causal, a user's array)": (dict(mask_kind=ac.MASK_OTHER), ac.XLA, *NOTHING,
                                                             "mask"),
    "no mask": (dict(mask_kind=ac.MASK_NONE), ac.CUDNN, *NOTHING, "cuDNN"),
    "padding": (dict(), ac.CUDNN, False, True, True, "right padded"),
    "causal": (dict(mask_kind=ac.MASK_CAUSAL), ac.CUDNN, True, False, False, "causal"),
    "padding + causal": (dict(mask_kind=ac.MASK_PADDING_CAUSAL), ac.CUDNN, True, True, True, "causal"),
    "fp16": (dict(dtype=jnp.float16), ac.CUDNN, False, True, True, "cuDNN"),
    "head_dim 128 on ampere": (dict(head_dim=128, compute_capability=AMPERE), ac.CUDNN, False, True, True,
                               "cuDNN"),
    "head_dim 256 on hopper": (dict(head_dim=256), ac.CUDNN, False, True, True, "cuDNN"),
    "head_dim 80 (XL)": (dict(head_dim=80), ac.CUDNN, False, True, True, "cuDNN"),
    "cudnn requested and possible": (dict(requested="cudnn"), ac.CUDNN, False, True, True, "cuDNN"),
}


@pytest.mark.parametrize("case", list(TABLE))
def test_selection_table(case):
    overrides, implementation, causal, key_lengths, guard, reason = TABLE[case]
    picked = ac.choose_attention(**{**BASE, **overrides})
    assert picked.implementation == implementation, picked.reason
    assert (picked.is_causal, picked.key_lengths, picked.right_padding_guard) == (causal, key_lengths, guard)
    assert reason in picked.reason


@pytest.mark.parametrize("overrides", [dict(platform="cpu"), dict(dtype=jnp.float32), dict(has_cache=True),
                                       dict(dropout_active=True), dict(mask_kind=ac.MASK_OTHER)],
                         ids=["cpu", "fp32", "cache", "dropout", "other-mask"])
def test_cudnn_requested_where_it_cannot_serve_raises(overrides):
    with pytest.raises(ValueError, match="cuDNN attention was requested but cannot serve"):
        ac.choose_attention(**{**BASE, **overrides, "requested": "cudnn"})


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mask_kind"):
        ac.choose_attention(**{**BASE, "mask_kind": "left"})
    with pytest.raises(ValueError, match="requested"):
        ac.choose_attention(**{**BASE, "requested": "flash"})
    with pytest.raises(ValueError, match="attention implementation"), ac.attention_implementation("flash"):
        pass


def test_request_context_is_scoped():
    assert ac.requested_implementation() == "auto"
    with ac.attention_implementation("xla"):
        assert ac.requested_implementation() == "xla"
    assert ac.requested_implementation() == "auto"


def test_default_target_on_this_machine():
    assert ac.default_target() == (jax.devices()[0].platform, None) == ("cpu", None)


# -- masks ------------------------------------------------------------------------------------------
RIGHT = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]])
LEFT = RIGHT[:, ::-1].copy()
HOLE = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]])
EMPTY_ROW = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])


@pytest.mark.parametrize("name, mask, right", [("right", RIGHT, True), ("left", LEFT, False),
                                               ("hole", HOLE, False), ("empty row", EMPTY_ROW, True)])
def test_padding_mask(name, mask, right):
    m = attn.padding_mask(jnp.asarray(mask))
    assert m.kind == ac.MASK_PADDING
    # the boolean array is exactly the one the XLA and explicit paths always applied
    np.testing.assert_array_equal(m.dense, mask.astype(bool)[:, None, None, :])
    np.testing.assert_array_equal(m.key_lengths, mask.sum(-1))
    assert m.key_lengths.dtype == jnp.int32
    assert bool(m.right_padded) is right, name


def test_causal_mask_kinds():
    square = attn.causal_mask(5, 5)
    assert square.kind == ac.MASK_CAUSAL and square.is_causal
    np.testing.assert_array_equal(square.dense, np.tril(np.ones((5, 5), bool))[None, None])
    assert attn.causal_mask(2, 8, jnp.int32(3)).kind == ac.MASK_OTHER  # a cache's: offset, not square
    assert attn.causal_mask(4, 6).kind == ac.MASK_OTHER
    assert attn.causal_mask(5, 5, 1).kind == ac.MASK_OTHER

    pad = attn.padding_mask(jnp.asarray(RIGHT))
    for combined in (square & attn.padding_mask(jnp.ones((3, 5), jnp.int32)),
                     attn.padding_mask(jnp.ones((3, 5), jnp.int32)) & square):
        assert combined.kind == ac.MASK_PADDING_CAUSAL and combined.is_causal
        np.testing.assert_array_equal(combined.key_lengths, [5, 5, 5])
    both = attn.causal_mask(7, 7) & pad
    np.testing.assert_array_equal(both.dense, np.tril(np.ones((7, 7), bool))[None, None] & pad.dense)
    assert (attn.causal_mask(2, 7, jnp.int32(5)) & pad).kind == ac.MASK_OTHER
    assert (pad & pad).kind == ac.MASK_OTHER
    assert attn.as_attention_mask(pad.dense).kind == ac.MASK_OTHER


def test_masks_are_pytrees_under_jit():
    @jax.jit
    def lengths(mask):
        return mask.key_lengths, mask.right_padded

    n, right = lengths(attn.padding_mask(jnp.asarray(RIGHT)))
    np.testing.assert_array_equal(n, [7, 4, 2])
    assert bool(right)


# -- the calls ----------------------------------------------------------------------------------------
def qkv(dtype=jnp.float32, batch=3, length=7, heads=2, head_dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.normal(size=(batch, length, heads, head_dim)), dtype) for _ in range(3))


def masks_of(mask: np.ndarray):
    length = mask.shape[1]
    return {
        "none": None,
        "padding": attn.padding_mask(jnp.asarray(mask)),
        "causal": attn.causal_mask(length, length),
        "padding + causal": attn.causal_mask(length, length) & attn.padding_mask(jnp.asarray(mask)),
    }


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["none", "padding", "causal", "padding + causal"])
def test_cpu_numerics_unchanged(dtype, kind):
    """On CPU the call is XLA's `jax.nn.dot_product_attention` with the boolean mask, bit for bit."""
    q, k, v = qkv(dtype)
    mask = masks_of(RIGHT)[kind]
    expected = jax.nn.dot_product_attention(q, k, v, mask=None if mask is None else mask.dense,
                                            scale=1 / np.sqrt(q.shape[-1]))
    out, weights = attn.scaled_dot_product_attention(q, k, v, mask, dropout_rate=0.1, dropout_rng=None,
                                                     deterministic=True, return_weights=False)
    assert weights is None
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(expected, np.float32))


def fused_as_xla(mask, q, k, v, **choice_overrides):
    """The cuDNN choice's call, run through XLA's fused code (what CPU can run)."""
    kind = ac.MASK_NONE if mask is None else mask.kind
    picked = ac.choose_attention(**{**BASE, "mask_kind": kind, **choice_overrides})
    assert picked.implementation == ac.CUDNN
    return attn.fused_attention(q, k, v, mask, picked, scale=1 / np.sqrt(q.shape[-1]), implementation="xla")


@pytest.mark.parametrize("kind", ["none", "padding", "causal", "padding + causal"])
@pytest.mark.parametrize("name, batch_mask", [("right", RIGHT), ("empty row", EMPTY_ROW)])
def test_lengths_and_causal_flag_mean_the_mask(kind, name, batch_mask):
    """Key lengths and `is_causal` give the boolean mask's result on every query row, pad rows
    included (as the reference computes them); a row without real keys stays finite."""
    q, k, v = qkv()
    mask = masks_of(batch_mask)[kind]
    expected = jax.nn.dot_product_attention(q, k, v, mask=None if mask is None else mask.dense,
                                            scale=1 / np.sqrt(q.shape[-1]))
    out = jax.jit(fused_as_xla)(mask, q, k, v)
    assert np.all(np.isfinite(out)), name
    rows = batch_mask.sum(-1) > 0 if kind in ("padding", "padding + causal") else slice(None)
    np.testing.assert_allclose(np.asarray(out)[rows], np.asarray(expected)[rows], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name, batch_mask", [("left", LEFT), ("hole", HOLE)])
@pytest.mark.parametrize("kind", ["padding", "padding + causal"])
def test_not_right_padded_takes_the_mask(name, batch_mask, kind):
    """The guard sends a batch that is not right padded to XLA with its boolean mask: same result
    everywhere, padded rows included."""
    q, k, v = qkv()
    mask = masks_of(batch_mask)[kind]
    expected = jax.nn.dot_product_attention(q, k, v, mask=mask.dense, scale=1 / np.sqrt(q.shape[-1]),
                                            implementation="xla")
    # jitted guard vs an eager call: two programs, so a tolerance (another CPU may fuse differently)
    np.testing.assert_allclose(jax.jit(fused_as_xla)(mask, q, k, v), expected, atol=1e-6, rtol=0)


def test_gradients_through_the_guarded_call():
    q, k, v = qkv()
    mask = attn.padding_mask(jnp.asarray(RIGHT))
    rows = jnp.asarray(RIGHT, jnp.float32)[:, :, None, None]

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v) * rows)  # real query rows only

    dense = functools.partial(jax.nn.dot_product_attention, mask=mask.dense, scale=1 / np.sqrt(8))
    fused = functools.partial(fused_as_xla, mask)
    expected = jax.grad(functools.partial(loss, dense), argnums=(0, 1, 2))(q, k, v)
    got = jax.jit(jax.grad(functools.partial(loss, fused), argnums=(0, 1, 2)))(q, k, v)
    for name, a, b in zip("qkv", got, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=name)


def test_cudnn_request_on_cpu_raises():
    q, k, v = qkv(jnp.bfloat16)
    with ac.attention_implementation("cudnn"), pytest.raises(ValueError, match="platform 'cpu'"):
        attn.scaled_dot_product_attention(q, k, v, None, dropout_rate=0.0, dropout_rng=None,
                                          deterministic=True, return_weights=False)


def test_missing_fused_api_raises_clearly(monkeypatch):
    def old_dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None):
        raise AssertionError("not to be called")

    monkeypatch.setattr(jax.nn, "dot_product_attention", old_dot_product_attention)
    q, k, v = qkv(jnp.bfloat16)
    picked = ac.choose_attention(**{**BASE, "mask_kind": ac.MASK_NONE})
    with pytest.raises(RuntimeError, match="key_value_seq_lengths"):
        attn.fused_attention(q, k, v, None, picked, scale=0.1)


# -- the whole model, as if on a CUDA GPU ---------------------------------------------------------------
@pytest.fixture
def pretend_cuda(monkeypatch):
    """Targets "cuda" (Hopper) and records the fused calls; a cuDNN call is traced through XLA's code.
    Lowered for CPU, `platform_dependent` still runs the XLA branch: outputs must not change."""
    calls = []
    real = jax.nn.dot_product_attention

    @functools.wraps(real)
    def recording(*args, implementation=None, **kwargs):
        calls.append(dict(implementation=implementation, **{
            name: kwargs.get(name) is not None for name in ("key_value_seq_lengths", "query_seq_lengths", "mask")},
            is_causal=kwargs.get("is_causal", False)))
        return real(*args, implementation="xla" if implementation == "cudnn" else implementation, **kwargs)

    monkeypatch.setattr(ac, "default_target", lambda: ("cuda", HOPPER))
    monkeypatch.setattr(jax.nn, "dot_product_attention", recording)
    # nothing traced before may be reused, nor anything traced here after
    compiled.clear_cache()
    jax.clear_caches()
    yield calls
    compiled.clear_cache()
    jax.clear_caches()


def tiny_config(**overrides):
    return xlmr_jax.XLMRobertaConfig.preset("base").replace(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=20, **overrides)


def encoder_inputs():
    ids = np.array([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]])
    return ids, (ids != 1).astype(np.int32)


@pytest.mark.parametrize("is_decoder", [False, True], ids=["encoder", "decoder"])
def test_model_on_pretended_cuda_stages_cudnn_and_keeps_cpu_numbers(pretend_cuda, is_decoder):
    config = tiny_config(is_decoder=is_decoder)
    model = xlmr_jax.XLMRobertaModel(config, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    ids, mask = encoder_inputs()
    graphdef, state = nnx.split(model)

    def make_forward():  # a new function each time: JAX reuses the traces of a function it has seen
        return jax.jit(lambda state, ids, mask: nnx.merge(graphdef, state)(ids, mask).last_hidden_state)

    staged = make_forward()(state, ids, mask)
    cudnn_calls = [c for c in pretend_cuda if c["implementation"] == "cudnn"]
    assert cudnn_calls, pretend_cuda
    for call in cudnn_calls:
        assert call == dict(implementation="cudnn", key_value_seq_lengths=True, query_seq_lengths=False,
                            is_causal=is_decoder, mask=False)
    pretend_cuda.clear()
    with ac.attention_implementation("xla"):
        plain = make_forward()(state, ids, mask)
    assert {c["implementation"] for c in pretend_cuda} == {"xla"}
    # two programs (the staged cuDNN call runs as XLA on CPU): bf16 outputs within a bf16 step
    np.testing.assert_allclose(np.asarray(staged, np.float32), np.asarray(plain, np.float32), atol=2e-2, rtol=0)


def test_decoding_with_cache_and_fp32_keep_xla(pretend_cuda):
    model = xlmr_jax.XLMRobertaForCausalLM(tiny_config(is_decoder=True), dtype=jnp.bfloat16)
    ids, _ = encoder_inputs()
    model.generate(ids[:1, :4], max_new_tokens=2)
    assert pretend_cuda and {c["implementation"] for c in pretend_cuda} == {"xla"}
    pretend_cuda.clear()
    fp32 = xlmr_jax.XLMRobertaModel(tiny_config())
    fp32(*encoder_inputs())
    assert pretend_cuda and {c["implementation"] for c in pretend_cuda} == {"xla"}
