"""Strict at the boundary: labels, ids and shapes are checked where they enter, naming the argument;
under jit, where nothing can raise, a bad value gives NaN, never a wrapped or clamped one."""

import numpy as np
import pytest
import torch
from flax import nnx
from parity import assert_close

import xlmr_jax
from xlmr_jax.modeling import validation

IDS = np.array([[0, 5, 6, 2], [0, 7, 2, 1]])
MASK = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
VOCAB = 99  # the tiny reference models'; 3 labels


def loss_cases():
    """(head, inputs, good labels, bad labels): class ids one past the end, and negative ones."""
    mlm, tok = IDS.copy(), np.zeros(IDS.shape, np.int64)
    mlm[0, 1] = -100
    return [
        ("MaskedLM", IDS, mlm, [VOCAB, -1, -5]),
        ("CausalLM", IDS, mlm, [VOCAB, -1]),
        ("TokenClassification", IDS, tok, [3, -5]),
        ("SequenceClassification", IDS, np.array([0, 2]), [3, -1, -5]),
        ("MultipleChoice", IDS.reshape(1, 2, 4), np.array([1]), [2, -1]),
    ]


CASES = loss_cases()


@pytest.mark.parametrize(("head", "ids", "good", "bad_values"), CASES, ids=[c[0] for c in CASES])
def test_out_of_range_labels_raise_eagerly_and_give_nan_under_jit(models, head, ids, good, bad_values):
    arch = f"XLMRobertaFor{head}"
    model = models(arch, is_decoder=True) if head == "CausalLM" else models(arch)
    mask = np.ones(ids.shape, np.int64)
    step = nnx.jit(lambda m, labels: m(ids, mask, labels=labels).loss)
    assert np.isfinite(float(model(ids, mask, labels=good).loss))
    assert np.isfinite(float(step(model, good)))
    for value in bad_values:
        labels = good.copy()
        labels.reshape(-1)[-1] = value  # the causal LM's first label is never a target: use the last
        with pytest.raises(ValueError, match=r"labels: values must lie in \[0, \d+\] or be -100"):
            model(ids, mask, labels=labels)
        assert np.isnan(float(step(model, labels))), (arch, value)


def test_int64_ids_beyond_int32_are_refused_before_jit_wraps_them(models):
    model = models("XLMRobertaForMaskedLM")
    forward = xlmr_jax.jit_forward(model)
    wrapping = IDS.astype(np.int64)
    wrapping[0, 1] = 2**32 + 5  # cast to int32 this is 5: a valid id and finite, wrong logits
    with pytest.raises(ValueError, match=r"input_ids: values must fit in int32 \(jit casts int64 to it\)"):
        forward(wrapping, MASK)
    with pytest.raises(ValueError, match="labels: values must fit in int32"):
        forward(IDS, MASK, labels=np.where(MASK == 1, 2**32 + 5, -100))
    assert np.isfinite(np.asarray(forward(IDS.astype(np.int64), MASK).logits)).all()


@pytest.mark.parametrize("shape", [(0, 4), (2, 0)])
def test_empty_batch_or_length_is_named(models, shape):
    model = models("XLMRobertaForMaskedLM")
    with pytest.raises(ValueError, match=r"input_ids: expected at least one sequence of at least one token"):
        model(np.zeros(shape, np.int64))
    with pytest.raises(ValueError, match=r"input_ids: expected at least one sequence"):
        xlmr_jax.jit_forward(model)(np.zeros(shape, np.int64))
    with pytest.raises(ValueError, match=r"inputs_embeds: expected at least one sequence"):
        model(inputs_embeds=np.zeros((*shape, 32), np.float32))


def test_real_lengths_are_checked_not_the_padded_width():
    ids = np.full((2, 40), 5)
    ids[1, 38:] = 1  # 38 real tokens and 2 pads: fits 40 positions with pad 1
    validation.check_real_lengths("input_ids", ids[1:], pad_token_id=1, max_length=38)
    with pytest.raises(ValueError, match=r"input_ids: input length 40 exceeds the model's 38 positions \(pads not"):
        validation.check_real_lengths("input_ids", ids, pad_token_id=1, max_length=38)


def test_padded_width_beyond_the_positions_is_accepted_like_the_reference(reference_checkpoint):
    ref, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    model = xlmr_jax.XLMRobertaModel.from_pretrained(path)
    ids = np.random.default_rng(0).integers(3, VOCAB, size=(2, 40))
    ids[:, 38:] = 1
    ids[0, 30:] = 1
    mask = (ids != 1).astype(np.int64)
    with torch.no_grad():
        expected = ref(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
    assert_close("last_hidden_state", model(ids, mask).last_hidden_state, expected, mask)
    out = xlmr_jax.jit_forward(model)(ids, mask).last_hidden_state
    assert_close("jitted last_hidden_state", out, expected, mask)
    with pytest.raises(ValueError, match="input length 39 exceeds"):
        model(np.full((1, 39), 5))


def test_jit_forward_names_call_switches_given_per_call(models):
    model = models("XLMRobertaModel")
    ids = np.full((1, 4), 5, np.int32)
    with pytest.raises(TypeError, match=r"jit_forward\(model, output_hidden_states=True\)"):
        xlmr_jax.jit_forward(model)(ids, output_hidden_states=True)
    hidden = xlmr_jax.jit_forward(model, output_hidden_states=True)(ids).hidden_states
    assert len(hidden) == model.config.num_hidden_layers + 1
