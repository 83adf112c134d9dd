"""Masked-LM training projects onto the vocabulary only where tokens are masked: the positions
and labels the masking hands the model, and the model's `masked_positions` against its full logits
and against the reference's loss."""

import jax
import numpy as np
import pytest
import torch

from xlmr_jax.training.masking import mask_tokens, masked_positions, prediction_width


def test_positions_list_each_rows_masked_tokens_in_order():
    labels = np.full((3, 10), -100, np.int32)
    labels[0, [1, 4, 7]] = [11, 14, 17]
    labels[2, [0, 9]] = [20, 29]
    positions, gathered = masked_positions(labels, 4)
    np.testing.assert_array_equal(positions, [[1, 4, 7, -1], [-1, -1, -1, -1], [0, 9, -1, -1]])
    np.testing.assert_array_equal(gathered, [[11, 14, 17, -100], [-100] * 4, [20, 29, -100, -100]])
    with pytest.raises(ValueError, match="more than the width 2"):
        masked_positions(labels, 2)


def test_the_width_caps_rows_only_beyond_six_deviations():
    assert prediction_width(128, 0.15) == 48  # mean 19.2 + 6 sd of 4.0, rounded up to 8
    assert prediction_width(16, 0.15) == 16  # never more than the row
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 300, size=(2000, 128))
    special = np.zeros_like(ids, dtype=bool)
    capped_ids, capped = mask_tokens(ids, special, mask_token_id=301, vocab_size=302,
                                     rng=np.random.default_rng(1), max_predictions=48)
    free_ids, free = mask_tokens(ids, special, mask_token_id=301, vocab_size=302, rng=np.random.default_rng(1))
    # at this width no row of 2000 is capped: the same draws give the same masks as without a cap
    np.testing.assert_array_equal(capped, free)
    np.testing.assert_array_equal(capped_ids, free_ids)
    # a narrow cap keeps exactly that many per row, a subset of the uncapped choice
    _, narrow = mask_tokens(ids, special, mask_token_id=301, vocab_size=302,
                            rng=np.random.default_rng(1), max_predictions=5)
    kept = narrow != -100
    assert (kept.sum(-1) == np.minimum((free != -100).sum(-1), 5)).all()
    assert not (kept & (free == -100)).any()


def test_logits_and_loss_at_masked_positions_match_the_full_ones_and_the_reference(reference_checkpoint):
    import xlmr_jax

    torch_model, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path)
    rng = np.random.default_rng(3)
    vocab = model.config.vocab_size
    ids = rng.integers(3, vocab, size=(3, 12)).astype(np.int32)
    ids[:, 0] = 0
    mask = np.ones_like(ids)
    mask[1, 8:] = 0  # a padded row
    ids[1, 8:] = model.config.pad_token_id
    special = (ids == 0) | (mask == 0)
    masked, labels = mask_tokens(ids, special, mask_token_id=vocab - 1, vocab_size=vocab,
                                 rng=rng, probability=0.3)
    width = prediction_width(12, 0.3)
    positions, at_positions = masked_positions(labels, width)
    assert (positions >= 0).sum() > 4

    full = model(masked, mask, labels=labels)
    gathered = model(masked, mask, labels=at_positions, masked_positions=positions)
    assert gathered.logits.shape == (3, width, vocab)
    for row in range(3):
        for slot, position in enumerate(positions[row]):
            if position >= 0:
                np.testing.assert_allclose(gathered.logits[row, slot], full.logits[row, position], atol=1e-5)
    with torch.no_grad():
        reference = torch_model(input_ids=torch.tensor(masked, dtype=torch.long), attention_mask=torch.tensor(mask),
                                labels=torch.tensor(labels, dtype=torch.long)).loss.item()
    assert abs(float(gathered.loss) - reference) <= 1e-5 * abs(reference)

    # and the gradients of the two losses agree
    from flax import nnx

    def loss_of(use_positions):
        def loss(m):
            if use_positions:
                return m(masked, mask, labels=at_positions, masked_positions=positions).loss
            return m(masked, mask, labels=labels).loss
        return nnx.grad(loss)(model)

    full_grads = jax.tree.leaves(loss_of(False))
    gathered_grads = jax.tree.leaves(loss_of(True))
    for a, b in zip(full_grads, gathered_grads, strict=True):
        scale = max(float(np.max(np.abs(a))), 1e-12)
        assert float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) <= 1e-4 * scale


def test_bad_masked_positions_are_named(reference_checkpoint):
    import xlmr_jax

    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path)
    ids = np.full((2, 6), 5, np.int32)
    with pytest.raises(ValueError, match=r"masked_positions: values must lie in \[-1, 5\]"):
        model(ids, masked_positions=np.array([[0, 6], [1, 2]]))
    with pytest.raises(ValueError, match="masked_positions: expected batch 2"):
        model(ids, masked_positions=np.array([[0, 1]]))
    with pytest.raises(ValueError, match=r"labels: expected shape \(2, 2\)"):
        model(ids, labels=np.full((2, 6), -100), masked_positions=np.array([[0, 1], [1, 2]]))
