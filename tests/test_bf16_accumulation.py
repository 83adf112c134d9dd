"""bf16 compute accumulates where it matters in fp32: attention scores (so asking for the weights
does not move the logits) and the vocabulary logits the loss is taken from."""

import jax.numpy as jnp
import numpy as np
import pytest

import xlmr_jax
from xlmr_jax.demo import TINY_CHECKPOINT


def batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 300, size=(4, 24))
    ids[:, 0] = 0
    mask = np.ones_like(ids)
    mask[1, 20:] = 0
    return ids, mask


def test_asking_for_attention_weights_does_not_move_bf16_logits():
    """The explicit path (weights returned) and the fused one both take QK^T in fp32; with the
    scores rounded to bf16 first, two thirds of the logits moved, by 0.005 on average."""
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(TINY_CHECKPOINT, dtype=jnp.bfloat16)
    ids, mask = batch()
    fused = np.asarray(model(ids, mask).logits, np.float32)
    explicit = model(ids, mask, output_attentions=True)
    assert explicit.attentions[0].dtype == jnp.float32
    diff = np.abs(np.asarray(explicit.logits, np.float32) - fused)[mask.astype(bool)]
    assert diff.mean() <= 5e-4, f"mean |diff| {diff.mean():.3g}"


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_bf16_loss_is_taken_from_fp32_logits(tied):
    """A constant added to every logit leaves the softmax, so the loss, unchanged. At 1000 a bf16
    logit resolves steps of 8: rounded logits would lose the loss; fp32 ones keep it."""
    if tied:
        model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(TINY_CHECKPOINT, dtype=jnp.bfloat16)
        bias = model.lm_head.bias
    else:
        model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(TINY_CHECKPOINT, dtype=jnp.bfloat16,
                                                              tie_word_embeddings=False, seed=0)
        word_embeddings = model.roberta.embeddings.word_embeddings.embedding[...]
        model.lm_head.decoder.kernel[...] = word_embeddings.T  # trained-like logits, not ~0
        bias = model.lm_head.decoder.bias
    ids, mask = batch()
    labels = np.where(mask == 1, ids, -100)
    out = model(ids, mask, labels=labels)
    assert out.logits.dtype == jnp.bfloat16  # returned in the compute dtype
    bias[...] = bias[...] + 1000.0
    shifted = model(ids, mask, labels=labels).loss
    assert abs(float(shifted) - float(out.loss)) <= 1e-3 * float(out.loss), (float(shifted), float(out.loss))
