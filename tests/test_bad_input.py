"""Bad input gets an error that names the argument, never a silent wrong answer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

IDS = np.array([[0, 5, 6, 2], [0, 7, 2, 1]])
MASK = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])


def test_wrong_rank_and_dtype(models):
    model = models("XLMRobertaModel")
    with pytest.raises(ValueError, match="input_ids: expected rank 2"):
        model(IDS[0])
    with pytest.raises(TypeError, match="input_ids: expected an integer array"):
        model(IDS.astype(np.float32))
    with pytest.raises(ValueError, match="attention_mask: expected shape"):
        model(IDS, MASK[:, :3])
    with pytest.raises(ValueError, match="token_type_ids: expected shape"):
        model(IDS, MASK, token_type_ids=np.zeros((2, 5), np.int32))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(IDS, inputs_embeds=np.zeros((2, 4, 32), np.float32))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="inputs_embeds: expected shape"):
        model(inputs_embeds=np.zeros((2, 4, 31), np.float32))


def test_out_of_range_values(models):
    model = models("XLMRobertaModel")
    with pytest.raises(ValueError, match=r"input_ids: values must lie in \[0, 98\]"):
        model(np.array([[0, 99, 2]]))
    with pytest.raises(ValueError, match="input_ids: values must lie in"):
        model(np.array([[0, -1, 2]]))
    with pytest.raises(ValueError, match="token_type_ids: values must lie in"):
        model(IDS, MASK, token_type_ids=np.full(IDS.shape, 2))
    with pytest.raises(ValueError, match="position_ids: values must lie in"):
        model(IDS, MASK, position_ids=np.full(IDS.shape, 40))


def test_out_of_range_ids_under_jit_give_nan_not_a_clamped_row(models):
    model = models("XLMRobertaModel")
    forward = nnx.jit(lambda m, ids: m(ids).last_hidden_state)
    out = np.asarray(forward(model, jnp.array([[0, 5, 99, 2], [0, 5, -3, 2]])))
    assert np.isnan(out).all(axis=-1).any(axis=-1).all()
    assert np.isfinite(np.asarray(forward(model, jnp.array([[0, 5, 6, 2]])))).all()


def test_sequence_longer_than_positions(models):
    model = models("XLMRobertaModel")  # max_position_embeddings 40, pad 1: 38 tokens fit
    assert model(np.full((1, 38), 5)).last_hidden_state.shape == (1, 38, 32)
    with pytest.raises(ValueError, match="input length 39 exceeds the model's 38 positions"):
        model(np.full((1, 39), 5))


def test_labels_of_the_wrong_shape_or_dtype(models):
    with pytest.raises(ValueError, match=r"labels: expected shape \(2, 4\)"):
        models("XLMRobertaForMaskedLM")(IDS, MASK, labels=IDS[:, :3])
    with pytest.raises(TypeError, match="labels: expected integer"):
        models("XLMRobertaForTokenClassification")(IDS, MASK, labels=IDS.astype(np.float32))
    seq = models("XLMRobertaForSequenceClassification")  # 3 labels
    with pytest.raises(ValueError, match=r"labels: expected shape \(2,\)"):
        seq(IDS, MASK, labels=np.array([[0], [1]]))
    with pytest.raises(ValueError, match=r"labels: expected shape \(2, 3\)"):
        seq(IDS, MASK, labels=np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"labels: expected shape \(1,\)"):
        models("XLMRobertaForMultipleChoice")(IDS.reshape(1, 2, 4), MASK.reshape(1, 2, 4), labels=np.array([0, 1]))
    qa = models("XLMRobertaForQuestionAnswering", num_labels=2)
    with pytest.raises(ValueError, match="start_positions: expected shape"):
        qa(IDS, MASK, start_positions=np.array([1, 2, 3]), end_positions=np.array([1, 2]))
    with pytest.raises(ValueError, match="both start_positions and end_positions"):
        qa(IDS, MASK, start_positions=np.array([1, 2]))


def test_multiple_choice_needs_choices_axis(models):
    with pytest.raises(ValueError, match="multiple choice expects rank 3"):
        models("XLMRobertaForMultipleChoice")(IDS)


def test_dropout_needs_an_rng(models):
    model = models("XLMRobertaModel")
    with pytest.raises(ValueError, match="dropout_rng"):
        model(IDS, MASK, deterministic=False)


def test_decoder_only_arguments(models):
    model = models("XLMRobertaModel")
    with pytest.raises(ValueError, match="needs a decoder"):
        model.init_cache(2, 8)
    with pytest.raises(ValueError, match="no cross-attention"):
        model(IDS, MASK, encoder_hidden_states=np.zeros((2, 3, 32), np.float32))
    causal = models("XLMRobertaForCausalLM", is_decoder=True)
    cache = causal.init_cache(2, 8)
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 8\)"):
        causal(IDS, MASK, cache=cache)
    with pytest.raises(ValueError, match="cache: built for batch 2"):
        causal(IDS[:1], cache=cache)
    with pytest.raises(ValueError, match="exceeds the 38 positions"):
        causal.init_cache(2, 39)


def test_eager_checks_do_not_break_jit(models):
    model = models("XLMRobertaForSequenceClassification")
    step = nnx.jit(lambda m, ids, mask, labels: m(ids, mask, labels=labels).loss)
    assert np.isfinite(float(step(model, IDS, MASK, np.array([0, 2]))))
    grads = nnx.grad(lambda m: m(IDS, MASK, labels=np.array([0, 2])).loss)(model)
    assert all(np.isfinite(np.asarray(v[...])).all() for _, v in nnx.to_flat_state(grads))
    assert jax.tree.leaves(grads)
