"""`finetune(config)`: the training loop every task shares.

The order of work is what keeps a run safe and exact:
1. check everything the user gave (arguments, model, data, labels, the output's place) before
   writing anything;
2. train with one jitted step (donated state) over a resumable, bucketed batch iterator; the
   loss of update u is read while update u+1 runs (no stall), and always before a checkpoint is
   written, so a checkpoint never holds the result of a non-finite step;
3. every random choice is a function of (seed, micro-step): dropout keys are folded from the step,
   masked-LM masks drawn from a generator seeded by (seed, process, micro-step), and the data order
   is the iterator's (its position saved in each checkpoint). A resumed run therefore repeats
   exactly the computation an uninterrupted one would have made;
4. export the best (or last) parameters in HF format with the tokenizer and the label maps.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import jax
import numpy as np

from xlmr_jax.finetune import run_directory
from xlmr_jax.finetune.config import FinetuneConfig

logger = logging.getLogger("xlmr_jax")


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient stopped the run (on_nonfinite="stop")."""


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Run `config`; returns the summary also written to OUTPUT/metrics.jsonl (final metrics, best
    step, where the model was written). Call `xlmr_jax.distributed.initialize(...)` first on
    several processes; every process runs the same config."""
    from xlmr_jax.finetune.setup import open_checkpoints, prepare_run

    config.check()
    run = prepare_run(config)  # everything checked and loaded; nothing written yet
    run_directory.start(run.output, config)
    open_checkpoints(run)
    try:
        return _train(config, run)
    finally:
        run.checkpoints.close()


def _train(config: FinetuneConfig, run) -> dict[str, Any]:
    from xlmr_jax.finetune.evaluation import evaluate
    from xlmr_jax.finetune.export import export_model
    from xlmr_jax.training.optim import learning_rate_of

    state, progress = run.initial_state, {"best": None, "evals_without_improvement": 0}
    resumed = run.checkpoints.latest_step() if config.resume else None
    if resumed is not None:
        state, progress = run.checkpoints.restore(resumed, state)
        run.train_batches.set_state(progress["iterator"])
    log = run_directory.MetricsLog(run.output, resumed)
    start = int(resumed or 0)
    accumulation = config.gradient_accumulation_steps
    dropout_key = jax.random.key(config.seed) if run.dropout else None
    window = _Window()
    bar = _progress_bar(config, run.total_steps, start)
    pending = None  # (update, loss, grad_norm) of the update whose values are not read yet
    last_eval: dict[str, float] | None = None
    stopped_early = False
    for update in range(start, run.total_steps):
        losses, norms = [], []
        for micro in range(accumulation):
            micro_step = update * accumulation + micro
            batch, tokens = run.next_train_batch(micro_step)
            rng = None if dropout_key is None else jax.random.fold_in(dropout_key, micro_step)
            state, (loss, grad_norm) = run.train_step(state, batch, rng)
            losses.append(loss)
            norms.append(grad_norm)
            window.tokens += tokens
            window.samples += config.batch_size
        if pending is not None:
            _check_finite(config, run, *pending, window)
        pending = (update + 1, losses, norms)
        done = update + 1
        last = done == run.total_steps  # the end evaluates and saves after the loop
        evaluate_now = bool(config.eval_every and done % config.eval_every == 0) and not last
        save_now = not last and (bool(config.save_every and done % config.save_every == 0) or (
            evaluate_now and config.save_every is None))
        if done % config.log_every == 0 or evaluate_now or save_now:
            _check_finite(config, run, *pending, window)
            pending = None
            log.write(window.record(done, run, learning_rate=float(_host(learning_rate_of(state.opt_state)))))
        metrics = None
        if evaluate_now:
            metrics = evaluate(run, state.params)
            last_eval = metrics
            log.write({"step": done, "eval": metrics})
            stopped_early = _track_best(config, progress, metrics, done)
            if progress.get("best_step") == done:
                save_now = True  # the export restores the best step: it must have a checkpoint
        if save_now or stopped_early:
            _save(run, done, state, progress, metrics)
        if bar is not None:
            bar.update(1)
        if stopped_early:
            logger.info("early stopping at step %d: %s did not improve in %d evaluations", done,
                        config.metric_name, config.early_stopping_patience)
            break
    if pending is not None:
        _check_finite(config, run, *pending, window)
    if bar is not None:
        bar.close()
    final_step = int(_host(state.step)) // accumulation
    if window.updates:
        log.write(window.record(final_step, run, learning_rate=float(_host(learning_rate_of(state.opt_state)))))
    if run.validation is not None and not stopped_early:  # an early stop has just evaluated
        last_eval = evaluate(run, state.params)
        log.write({"step": final_step, "eval": last_eval})
        _track_best(config, progress, last_eval, final_step)
    if run.checkpoints.latest_step() != final_step:
        _save(run, final_step, state, progress, last_eval)
    exported_step = final_step
    best = progress.get("best_step")
    if best is not None and best != final_step:
        state, _ = run.checkpoints.restore(best, state)
        exported_step = best
    model_dir = export_model(run, state, os.path.join(run.output, run_directory.MODEL))
    summary = {"step": final_step, "summary": {
        "final_eval": last_eval, "best_step": best, "exported_step": exported_step,
        "best": progress.get("best"), "metric": config.metric_name, "stopped_early": stopped_early,
        "model": model_dir, "total_steps": run.total_steps,
    }}
    log.write(summary)
    return summary["summary"]


# -- pieces of the loop ------------------------------------------------------------------------------

class _Window:
    """Throughput and mean loss since the last log line."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.tokens, self.samples, self.updates, self.loss_sum, self.norm_max = 0, 0, 0, 0.0, 0.0
        self.skipped = 0
        self.started = time.perf_counter()

    def add(self, loss: float, norm: float, skipped: bool) -> None:
        self.updates += 1
        self.skipped += int(skipped)
        if not skipped:
            self.loss_sum += loss
            self.norm_max = max(self.norm_max, norm)

    def record(self, step: int, run, *, learning_rate: float) -> dict[str, Any]:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        counted = max(self.updates - self.skipped, 1)
        record = {"step": step, "epoch": round(step * run.accumulation / run.batches_per_epoch, 4),
                  "loss": self.loss_sum / counted, "learning_rate": learning_rate,
                  "grad_norm": self.norm_max, "tokens_per_s": self.tokens * jax.process_count() / seconds,
                  "samples_per_s": self.samples / seconds}
        if self.skipped:
            record["skipped_updates"] = self.skipped
        self.reset()
        return record


def _check_finite(config: FinetuneConfig, run, update: int, losses, norms, window: _Window) -> None:
    loss = float(np.mean([_host(x) for x in losses]))
    norm = float(max(_host(x) for x in norms))
    finite = math.isfinite(loss) and math.isfinite(norm)
    if not finite and config.on_nonfinite == "stop":
        last = run.checkpoints.latest_step()
        where = (f"the last good checkpoint is step {last} in {run.checkpoints.directory} (continue from it "
                 f"with --resume)" if last is not None else "no checkpoint was written yet")
        raise NonFiniteError(
            f"step {update}: loss {loss}, gradient norm {norm}: training stopped; {where}. Lower the learning "
            f"rate, use float32, or pass --on-nonfinite skip to skip such updates")
    window.add(loss, norm, skipped=not finite)


def _track_best(config: FinetuneConfig, progress: dict, metrics: dict[str, float], step: int) -> bool:
    """Update the best value and its step (ties keep the earlier); True when early stopping's
    patience has run out."""
    name = config.metric_name
    if name not in metrics:
        raise ValueError(f"best_metric {name!r} is not among the evaluation's metrics {sorted(metrics)}")
    value, best = metrics[name], progress.get("best")
    better = best is None or (value > best if config.greater_is_better else value < best)
    if better:
        progress.update(best=value, best_step=step, evals_without_improvement=0)
    else:
        progress["evals_without_improvement"] += 1
    patience = config.early_stopping_patience
    return patience is not None and progress["evals_without_improvement"] >= patience


def _save(run, step: int, state, progress: dict, metrics: dict[str, float] | None) -> None:
    progress = dict(progress, iterator=run.train_batches.get_state(), step=step)
    run.checkpoints.save(step, state, progress, metrics)


def _progress_bar(config: FinetuneConfig, total: int, start: int):
    if not config.progress or jax.process_index() != 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=f"finetune {config.task}", unit="step")


def _host(x) -> Any:
    """A replicated device scalar (on any number of processes) as a host value."""
    if isinstance(x, jax.Array):
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


__all__ = ["NonFiniteError", "finetune"]
