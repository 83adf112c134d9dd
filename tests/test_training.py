"""Train / eval steps and training checkpoints on one process (several: test_multiprocess.py)."""

import numpy as np
import optax
import pytest
from reference_models import padded_batch

import xlmr_jax
from xlmr_jax.training import (
    make_eval_step,
    make_train_step,
    model_from_state,
    restore_train_state,
    save_train_state,
)


def batch_and_model(reference_checkpoint):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    ids, mask = padded_batch(np.random.default_rng(0), [7, 4, 6])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": np.where(mask == 1, ids, -100)}
    return batch, lambda: xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path)


def test_training_lowers_the_loss_and_gives_the_model_back(reference_checkpoint):
    batch, load = batch_and_model(reference_checkpoint)
    model = load()
    state, train_step = make_train_step(model, optax.adamw(1e-3))
    losses = []
    for _ in range(5):
        state, loss = train_step(state, batch)
        losses.append(float(loss))
    assert losses[-1] < losses[0] and int(state.step) == 5
    eval_loss, out = make_eval_step(model)(state.params, batch)
    trained = model_from_state(model, state)
    np.testing.assert_allclose(np.asarray(trained(**batch).logits), np.asarray(out.logits), atol=1e-5)
    assert float(eval_loss) < losses[0]


def test_resume_from_a_checkpoint_continues_exactly(reference_checkpoint, tmp_path):
    batch, load = batch_and_model(reference_checkpoint)
    state, train_step = make_train_step(load(), optax.adamw(1e-3))
    state, _ = train_step(state, batch)
    save_train_state(tmp_path / "ckpt", state)
    state, continued = train_step(state, batch)

    fresh, train_step_again = make_train_step(load(), optax.adamw(1e-3))
    restored = restore_train_state(tmp_path / "ckpt", fresh)
    assert int(restored.step) == 1
    restored, resumed = train_step_again(restored, batch)
    assert float(resumed) == float(continued)

    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        save_train_state(tmp_path / "ckpt", restored)
    save_train_state(tmp_path / "ckpt", restored, overwrite=True)
    with pytest.raises(FileNotFoundError, match="no training checkpoint"):
        restore_train_state(tmp_path / "nothing", restored)


def test_a_batch_without_labels_is_a_clear_error(reference_checkpoint):
    batch, load = batch_and_model(reference_checkpoint)
    state, train_step = make_train_step(load(), optax.sgd(0.1))
    with pytest.raises(ValueError, match="pass labels"):
        train_step(state, {k: v for k, v in batch.items() if k != "labels"})


def test_the_second_step_compiles_nothing(reference_checkpoint):
    """The initial state is placed like the state a step returns: one program for every step."""
    from compile_log import compile_log

    batch, load = batch_and_model(reference_checkpoint)
    state, train_step = make_train_step(load(), optax.adamw(1e-3))
    state, _ = train_step(state, batch)
    with compile_log() as compiled:
        state, _ = train_step(state, batch)
        state, _ = train_step(state, batch)
    assert compiled == []
