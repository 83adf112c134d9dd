"""Every model, both layouts, against the PyTorch reference: logits, hidden states, attentions,
pooler output and losses, on right-padded batches of uneven length (non-pad positions).

Our attention has two paths (xlmr_jax/modeling/attention.py): the fused
`jax.nn.dot_product_attention` by default, and an explicit einsum + softmax that runs when the
attention weights are asked for. Every case runs both and holds each to the reference."""

import numpy as np
import pytest
import torch
from parity import assert_attention_close, assert_close
from reference_models import padded_batch

import xlmr_jax

LAYOUTS = ["xlm-roberta", "xlm-roberta-xl"]
TOKEN_LEVEL = ["XLMRobertaModel", "XLMRobertaForMaskedLM", "XLMRobertaForCausalLM",
               "XLMRobertaForTokenClassification", "XLMRobertaForQuestionAnswering"]
ALL_ARCHS = TOKEN_LEVEL + ["XLMRobertaForSequenceClassification", "XLMRobertaForMultipleChoice"]


def overrides_for(arch: str) -> dict:
    if arch == "XLMRobertaForQuestionAnswering":
        return {"num_labels": 2}
    if arch == "XLMRobertaForCausalLM":
        return {"is_decoder": True}
    return {}


def batch(seed=0, lengths=(9, 6, 3, 7)):
    rng = np.random.default_rng(seed)
    ids, mask = padded_batch(rng, list(lengths))
    token_types = rng.integers(0, 2, size=ids.shape) * mask
    return ids, mask, token_types


# output_attentions=False takes the default attention (fused `jax.nn.dot_product_attention`), True the
# explicit einsum that returns the weights.
PATHS = {"default attention": False, "explicit attention": True}


def run_both(reference_checkpoint, layout, arch, **inputs):
    """(our outputs by attention path, the reference's outputs with attentions)."""
    ref, path = reference_checkpoint(layout, arch, **overrides_for(arch))
    ours = getattr(xlmr_jax, arch).from_pretrained(path)
    torch_inputs = {k: torch.tensor(v) for k, v in inputs.items()}
    with torch.no_grad():
        expected = ref(**torch_inputs, output_hidden_states=True, output_attentions=True)
    got = {name: ours(**inputs, output_hidden_states=True, output_attentions=weights)
           for name, weights in PATHS.items()}
    return got, expected


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_outputs_match_reference(reference_checkpoint, layout, arch):
    ids, mask, token_types = batch()
    if arch == "XLMRobertaForMultipleChoice":
        ids, mask, token_types = (x.reshape(2, 2, -1) for x in (ids, mask, token_types))
    paths, expected = run_both(reference_checkpoint, layout, arch, input_ids=ids, attention_mask=mask,
                               token_type_ids=token_types)
    flat_mask = mask.reshape(-1, mask.shape[-1])
    for name, got in paths.items():
        if arch == "XLMRobertaModel":
            assert_close(f"{name}: last_hidden_state", got.last_hidden_state, expected.last_hidden_state, mask)
            assert_close(f"{name}: pooler_output", got.pooler_output, expected.pooler_output)
        elif arch == "XLMRobertaForQuestionAnswering":
            assert_close(f"{name}: start_logits", got.start_logits, expected.start_logits, mask)
            assert_close(f"{name}: end_logits", got.end_logits, expected.end_logits, mask)
        elif arch in TOKEN_LEVEL:
            assert_close(f"{name}: logits", got.logits, expected.logits, mask)
        else:
            assert_close(f"{name}: logits", got.logits, expected.logits)
        assert len(got.hidden_states) == len(expected.hidden_states)
        for i, (a, b) in enumerate(zip(got.hidden_states, expected.hidden_states, strict=True)):
            assert_close(f"{name}: hidden_states[{i}]", a, b, flat_mask)
    assert paths["default attention"].attentions is None
    attentions = paths["explicit attention"].attentions
    assert len(attentions) == len(expected.attentions)
    for i, (a, b) in enumerate(zip(attentions, expected.attentions, strict=True)):
        assert_attention_close(f"attentions[{i}]", a, b, flat_mask)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inputs_embeds_and_explicit_position_ids(reference_checkpoint, layout):
    ref, path = reference_checkpoint(layout, "XLMRobertaModel")
    ours = xlmr_jax.XLMRobertaModel.from_pretrained(path)
    ids, mask, _ = batch(seed=1)
    embeds = np.random.default_rng(2).normal(size=(*ids.shape, 32)).astype(np.float32)
    with torch.no_grad():
        expected = ref(inputs_embeds=torch.tensor(embeds), attention_mask=torch.tensor(mask))
    got = ours(inputs_embeds=embeds, attention_mask=mask)
    assert_close("last_hidden_state(inputs_embeds)", got.last_hidden_state, expected.last_hidden_state, mask)
    positions = np.random.default_rng(3).integers(2, 40, size=ids.shape)
    with torch.no_grad():
        expected = ref(torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions))
    got = ours(ids, attention_mask=mask, position_ids=positions)
    assert_close("last_hidden_state(position_ids)", got.last_hidden_state, expected.last_hidden_state, mask)


def test_no_attention_mask_means_attend_everywhere(reference_checkpoint):
    ref, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    ours = xlmr_jax.XLMRobertaModel.from_pretrained(path)
    ids, _, _ = batch(lengths=(8, 8))
    with torch.no_grad():
        expected = ref(torch.tensor(ids))
    assert_close("last_hidden_state", ours(ids).last_hidden_state, expected.last_hidden_state)


def test_position_ids_follow_fairseq_convention():
    from xlmr_jax.modeling.embeddings import position_ids_from_input_ids

    ids = np.array([[0, 5, 6, 2, 1, 1], [0, 7, 2, 1, 1, 1]])
    np.testing.assert_array_equal(
        np.asarray(position_ids_from_input_ids(ids, pad_token_id=1)),
        [[2, 3, 4, 5, 1, 1], [2, 3, 4, 1, 1, 1]],
    )
