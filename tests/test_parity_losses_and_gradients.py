"""Losses for every head and problem type, and gradients of the loss w.r.t. every parameter,
against torch autograd (<= 1e-4 relative)."""

import numpy as np
import pytest
import torch
from flax import nnx
from grad_mapping import per_reference_key
from parity import assert_close, assert_relative_close
from reference_models import padded_batch

import xlmr_jax

LAYOUTS = ["xlm-roberta", "xlm-roberta-xl"]


def inputs_and_labels(arch, rng, num_labels=3, problem_type=None):
    ids, mask = padded_batch(rng, [8, 5, 6, 3])
    batch, length = ids.shape
    inputs = {"input_ids": ids, "attention_mask": mask}
    if arch in ("XLMRobertaForMaskedLM", "XLMRobertaForTokenClassification"):
        high = 99 if arch == "XLMRobertaForMaskedLM" else num_labels
        labels = rng.integers(0, high, size=ids.shape)
        labels[mask == 0] = -100
        labels[:, 1] = -100  # some real positions ignored too
        inputs["labels"] = labels
    elif arch == "XLMRobertaForCausalLM":
        labels = ids.copy()
        labels[mask == 0] = -100
        inputs["labels"] = labels
    elif arch == "XLMRobertaForSequenceClassification":
        if problem_type == "regression":
            inputs["labels"] = rng.normal(size=(batch,)).astype(np.float32)
        elif problem_type == "multi_label_classification":
            inputs["labels"] = rng.integers(0, 2, size=(batch, num_labels)).astype(np.float32)
        else:
            inputs["labels"] = rng.integers(0, num_labels, size=(batch,))
    elif arch == "XLMRobertaForMultipleChoice":
        inputs = {"input_ids": ids.reshape(2, 2, length), "attention_mask": mask.reshape(2, 2, length),
                  "labels": rng.integers(0, 2, size=(2,))}
    elif arch == "XLMRobertaForQuestionAnswering":
        # one position beyond the window: clamped, then ignored, as in the reference
        inputs["start_positions"] = np.array([1, 2, length + 5, 0])
        inputs["end_positions"] = np.array([3, 4, 2, length + 1])
    return inputs


CASES = [
    ("XLMRobertaForMaskedLM", {}),
    ("XLMRobertaForCausalLM", {"is_decoder": True}),
    ("XLMRobertaForTokenClassification", {}),
    ("XLMRobertaForQuestionAnswering", {"num_labels": 2}),
    ("XLMRobertaForMultipleChoice", {}),
    ("XLMRobertaForSequenceClassification", {}),
    ("XLMRobertaForSequenceClassification", {"num_labels": 1}),
    ("XLMRobertaForSequenceClassification", {"problem_type": "multi_label_classification"}),
]


def case_id(case):
    arch, overrides = case
    extra = "-".join(f"{k}={v}" for k, v in overrides.items())
    return f"{arch.removeprefix('XLMRobertaFor')}{'-' + extra if extra else ''}"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_loss_and_gradients_match_torch_autograd(reference_checkpoint, layout, case):
    arch, overrides = case
    ref, path = reference_checkpoint(layout, arch, **overrides)
    ours = getattr(xlmr_jax, arch).from_pretrained(path)
    problem_type = overrides.get("problem_type") or ("regression" if overrides.get("num_labels") == 1 else None)
    inputs = inputs_and_labels(arch, np.random.default_rng(5), ours.config.num_labels, problem_type)

    ref.zero_grad()
    expected = ref(**{k: torch.tensor(v) for k, v in inputs.items()})
    expected.loss.backward()
    ref_grads = {name: p.grad for name, p in ref.named_parameters() if p.grad is not None}

    def loss_fn(model):
        return model(**inputs).loss

    loss, grads = nnx.value_and_grad(loss_fn)(ours)
    assert_close("loss", loss, expected.loss)
    ours_by_key = per_reference_key(grads, ours.hf_prefix)
    # the reference lists tied tensors (the LM decoder) under their canonical names only
    assert set(ref_grads) <= set(ours_by_key) | {"lm_head.decoder.weight", "lm_head.decoder.bias"}
    largest = max(float(g.abs().max()) for g in ref_grads.values())
    for name, grad in ref_grads.items():
        if name in ("lm_head.decoder.weight", "lm_head.decoder.bias"):
            continue
        assert_relative_close(f"grad {name}", ours_by_key[name], grad, floor=1e-2 * largest)


def test_all_labels_ignored_gives_zero_loss_not_nan(reference_checkpoint):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    ours = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path)
    ids, mask = padded_batch(np.random.default_rng(0), [4, 3])
    loss = ours(ids, mask, labels=np.full(ids.shape, -100)).loss
    assert float(loss) == 0.0


def test_losses_are_float32_under_bf16(reference_checkpoint):
    import jax.numpy as jnp

    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    ours = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, dtype=jnp.bfloat16)
    ids, mask = padded_batch(np.random.default_rng(0), [4, 3])
    out = ours(ids, mask, labels=ids)
    assert out.logits.dtype == jnp.bfloat16
    assert out.loss.dtype == jnp.float32
