"""Evaluation over the validation features: model outputs for every feature, in order, then the
task's metrics; for language modelling, the loss (and masked-token accuracy) computed on device.

Batches come from the same bucketed iterator as training (static shapes, a few compiles) without
shuffling or dropping: the last batch of each bucket is filled up with copies of a real row, which
`__valid__` marks so their outputs are discarded.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xlmr_jax.finetune.batches import INDEX_KEY as ROW
from xlmr_jax.finetune.batches import VALID_KEY as VALID
from xlmr_jax.sharding import activation_mesh

LM_TASKS = ("masked-lm", "causal-lm")
LABEL_KEYS = ("labels", "start_positions", "end_positions")


def evaluate(run, params) -> dict[str, float]:
    features = run.validation
    batches = run.eval_batches()
    if run.config.task in LM_TASKS:
        return _language_model_metrics(run, params, batches)
    outputs: dict[str, np.ndarray] = {}
    for batch in batches:
        rows, valid = batch.pop(ROW), batch.pop(VALID).astype(bool)
        inputs = {k: v for k, v in _fill_invalid(batch, valid).items() if k not in LABEL_KEYS}
        predicted = run.predict(params, run.place(inputs))
        width = inputs["input_ids"].shape[-1]
        rows, valid = _to_host_rows(rows), _to_host_rows(valid)
        for name, value in predicted.items():
            value = _to_host(value)[valid]
            # Per-token outputs are as wide as their batch's bucket: stored at the widest one.
            per_token = value.ndim >= 2 and value.shape[1] == width
            if name not in outputs:
                shape = (features.max_length, *value.shape[2:]) if per_token else value.shape[1:]
                outputs[name] = np.zeros((len(features.lengths), *shape), value.dtype)
            if per_token:
                outputs[name][rows[valid], :width] = value
            else:
                outputs[name][rows[valid]] = value
    return {k: float(v) for k, v in run.task.evaluate(features, outputs, run.validation_records).items()}


def _language_model_metrics(run, params, batches) -> dict[str, float]:
    totals = np.zeros(3, np.float64)  # loss sum, target count, correct predictions
    for index, batch in enumerate(batches):
        batch.pop(ROW)
        valid = batch.pop(VALID).astype(bool)
        batch = run.lm_inputs(dict(batch), seed_parts=(1, index))  # fixed masks: every evaluation sees the same
        labels = batch["labels"]
        batch["labels"] = np.where(valid[:, None], labels, -100).astype(labels.dtype)
        totals += np.asarray(jax.device_get(run.lm_eval(params, run.place(batch))), np.float64)
    loss = totals[0] / max(totals[1], 1.0)
    metrics = {"loss": float(loss), "perplexity": float(np.exp(min(loss, 700.0)))}
    if run.config.task == "masked-lm":
        metrics["accuracy"] = float(totals[2] / max(totals[1], 1.0))
    return metrics


def make_predict(graphdef, frozen: tuple, output_names: tuple[str, ...], mesh):
    """A jitted params, batch -> {name: output} for the outputs the task's evaluation reads
    (`frozen`: the leaves that do not train, with LoRA; passed as arguments, never baked in)."""

    @jax.jit
    def predict(params, frozen, batch):
        out = nnx.merge(graphdef, params, *frozen)(**batch)
        return {name: getattr(out, name).astype(jnp.float32) for name in output_names}

    def run(params, batch):
        with activation_mesh(mesh):
            return predict(params, frozen, batch)

    return run


def make_lm_eval(graphdef, frozen: tuple, causal: bool, mesh):
    """A jitted params, batch -> [loss sum, targets, correct] over the non-ignored labels."""

    @jax.jit
    def lm_eval(params, frozen, batch):
        labels = batch.pop("labels")
        logits = nnx.merge(graphdef, params, *frozen)(**batch).logits.astype(jnp.float32)
        if causal:  # position t predicts t + 1, as the model's own loss
            logits, labels = logits[:, :-1], labels[:, 1:]
        keep = labels != -100
        safe = jnp.where(keep, labels, 0)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
        correct = (jnp.argmax(logits, -1) == safe) & keep
        return jnp.stack([jnp.sum(losses * keep), jnp.sum(keep), jnp.sum(correct)]).astype(jnp.float32)

    def run(params, batch):
        with activation_mesh(mesh):
            return lm_eval(params, frozen, batch)

    return run


def _fill_invalid(batch: dict[str, np.ndarray], valid: np.ndarray) -> dict[str, np.ndarray]:
    """Rows that only fill the batch become copies of its first real row (an all-padding row
    would be an input the model refuses)."""
    if valid.all():
        return batch
    first = int(np.argmax(valid))
    return {k: np.where(_expand(valid, v.ndim), v, v[first:first + 1]) for k, v in batch.items()}


def _expand(valid: np.ndarray, ndim: int) -> np.ndarray:
    return valid.reshape(valid.shape + (1,) * (ndim - 1))


@functools.cache
def _process_count() -> int:
    return jax.process_count()


def _to_host(value) -> np.ndarray:
    """A batch-sharded output as a host array of the global batch (gathered over processes)."""
    if _process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return np.asarray(value)


def _to_host_rows(local: np.ndarray) -> np.ndarray:
    """This process's slice of a per-row host array, as the global batch's (gathered over processes)."""
    if _process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(local, tiled=True))
    return local
