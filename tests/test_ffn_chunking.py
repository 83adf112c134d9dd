"""The feed-forward block run over chunks of the sequence (`XLMRobertaConfig.ffn_chunk_tokens`,
`xlmr_jax/modeling/chunking.py`): when it chunks, and that a chunked model gives the reference's
numbers, its gradients, and a loop in the program where it chunks."""

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from parity import assert_close
from reference_models import padded_batch

import xlmr_jax
from xlmr_jax.modeling.chunking import AUTO_CHUNK_TOKENS, feed_forward_chunks
from xlmr_jax.sharding import activation_mesh, make_mesh


def test_automatic_choice_chunks_cpu_inference_of_large_batches_only():
    assert jax.default_backend() == "cpu"
    auto = dict(chunk_tokens=None, deterministic=True)
    assert AUTO_CHUNK_TOKENS == 1024
    assert feed_forward_chunks(8, 128, **auto) == 1  # 1024 tokens: one chunk
    assert feed_forward_chunks(32, 128, **auto) == 4  # 4096 tokens: 4 slices of 32 positions
    assert feed_forward_chunks(8, 512, **auto) == 4
    assert feed_forward_chunks(64, 100, **auto) == 10  # the smallest divisor of 100 giving <= 1024 tokens
    assert feed_forward_chunks(2048, 128, **auto) == 128  # no divisor small enough: one position each
    assert feed_forward_chunks(32, 128, chunk_tokens=None, deterministic=False) == 1  # a train step
    assert feed_forward_chunks(32, 128, chunk_tokens=0, deterministic=True) == 1  # off


def test_explicit_size_chunks_training_too_and_counts_per_device_under_a_mesh():
    assert feed_forward_chunks(4, 16, chunk_tokens=8, deterministic=False) == 8
    assert feed_forward_chunks(3, 7, chunk_tokens=4, deterministic=True) == 7  # 7 is prime
    assert feed_forward_chunks(4, 16, chunk_tokens=64, deterministic=True) == 1
    with activation_mesh(make_mesh({"data": 4, "fsdp": 2})):  # each device holds 1/8 of the batch
        assert feed_forward_chunks(32, 128, chunk_tokens=None, deterministic=True) == 1
        assert feed_forward_chunks(64, 128, chunk_tokens=None, deterministic=True) == 1
        assert feed_forward_chunks(128, 128, chunk_tokens=None, deterministic=True) == 2
        # 12 rows cannot be split 8 ways: all 1536 tokens count, in 8 slices (128 has no divisor 6)
        assert feed_forward_chunks(12, 128, chunk_tokens=256, deterministic=True) == 8


def test_config_field_is_checked_and_not_written_to_config_json():
    config = xlmr_jax.XLMRobertaConfig(ffn_chunk_tokens=512)
    assert "ffn_chunk_tokens" not in config.to_dict()
    for bad in (-1, 1.5, "auto", True):
        with pytest.raises(ValueError, match="ffn_chunk_tokens"):
            xlmr_jax.XLMRobertaConfig(ffn_chunk_tokens=bad)


@pytest.mark.parametrize("layout", ["xlm-roberta", "xlm-roberta-xl"])
def test_chunked_model_matches_reference_on_a_padded_batch(reference_checkpoint, layout):
    reference, path = reference_checkpoint(layout, "XLMRobertaForMaskedLM")
    ids, mask = padded_batch(np.random.default_rng(1), [12, 5, 9, 12])
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, ffn_chunk_tokens=8)  # 48 tokens: 6 chunks
    assert feed_forward_chunks(*ids.shape, 8, deterministic=True) == 6
    unchunked = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, ffn_chunk_tokens=0)
    loops = [jax.jit(lambda i, m, model=m_: model(input_ids=i, attention_mask=m).logits)
             .lower(ids, mask).as_text().count("stablehlo.while") for m_ in (unchunked, model)]
    assert loops[1] > loops[0]  # the layer scan loops in both; the chunked one loops over chunks too
    got = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                             output_hidden_states=True)
    assert_close("logits", got.logits, expected.logits, mask)
    for i, (a, b) in enumerate(zip(got.hidden_states, expected.hidden_states, strict=True)):
        assert_close(f"hidden_states[{i}]", a, b, mask)


def test_chunked_training_step_has_the_unchunked_gradients(reference_checkpoint):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    ids, mask = padded_batch(np.random.default_rng(2), [16, 11, 16, 7])
    results = []
    for chunk_tokens in (0, 16):
        model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, ffn_chunk_tokens=chunk_tokens,
                                                               hidden_dropout_prob=0.0,
                                                               attention_probs_dropout_prob=0.0)
        graphdef, state = nnx.split(model)

        def loss(state, graphdef=graphdef):
            out = nnx.merge(graphdef, state)(input_ids=ids, attention_mask=mask, labels=ids,
                                             deterministic=False, dropout_rng=jax.random.key(0))
            return out.loss

        results.append(jax.jit(jax.value_and_grad(loss))(state))
    (loss0, grads0), (loss1, grads1) = results
    np.testing.assert_allclose(float(loss1), float(loss0), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads0), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


def test_chunked_dropout_is_reproducible():
    config = xlmr_jax.XLMRobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=20,
                                       hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.0,
                                       ffn_chunk_tokens=8)
    model = xlmr_jax.XLMRobertaModel(config, rngs=nnx.Rngs(0))
    ids = np.random.default_rng(3).integers(3, 50, (2, 16))
    mask = np.ones_like(ids)

    def run(key):
        return np.asarray(model(ids, mask, deterministic=False, dropout_rng=jax.random.key(key)).last_hidden_state)

    first, again, other = run(1), run(1), run(2)
    assert np.array_equal(first, again)  # the same computation twice
    assert not np.allclose(first, other)


@pytest.mark.parametrize("strategy,spec", [("fsdp", "data=4,fsdp=2"), ("fsdp_tp", "data=2,fsdp=2,tensor=2")])
def test_chunked_model_on_a_mesh_matches_reference(reference_checkpoint, strategy, spec):
    """Chunks are slices of the sequence: the batch stays split over the mesh, the intermediate
    over `tensor`, and the numbers are the reference's."""
    reference, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM", vocab_size=100)  # splits 2 ways
    ids, mask = padded_batch(np.random.default_rng(4), [12, 5, 9, 12, 3, 12, 8, 10])
    mesh = make_mesh(spec)
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, mesh=mesh, rules=strategy, ffn_chunk_tokens=8)
    with activation_mesh(mesh):
        assert feed_forward_chunks(*ids.shape, 8, deterministic=True) > 1
    got = xlmr_jax.jit_forward(model, mesh=mesh)(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    assert_close(f"chunked {strategy}", got, expected, mask)
