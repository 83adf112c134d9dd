"""The run's checkpoints: orbax's CheckpointManager, keeping the last K and the best.

Each checkpoint `OUTPUT/checkpoints/<step>/` holds the training state (parameters, optimizer state,
step; written collectively, each process its own shards) and the run's progress as JSON (the data
iterator's position, the best metric so far, evaluations without improvement), so `--resume`
continues exactly where the run stopped. Orbax writes each checkpoint into a temporary directory
and renames it when complete: a run killed while saving leaves the previous checkpoints intact.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from xlmr_jax.training.steps import TrainState

STEP_KEY = "_step"


class RunCheckpoints:
    def __init__(self, directory: str, *, keep: int, metric: str, greater_is_better: bool):
        import orbax.checkpoint as ocp
        from orbax.checkpoint.checkpoint_managers import preservation_policy as policy

        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        self.metric = metric

        def metric_of(metrics):
            # Ties go to the earlier step, as the loop's own best-tracking decides (BestN keeps the
            # last of an ascending sort; with reverse, of a descending one).
            step = metrics[STEP_KEY]
            return (metrics[metric], -step if greater_is_better else step)

        preserve = policy.AnyPreservationPolicy([
            policy.LatestN(keep),
            policy.BestN(get_metric_fn=metric_of, reverse=not greater_is_better, n=1,
                         keep_checkpoints_without_metrics=False),
        ])
        # Synchronous saves: the loop donates the state's buffers to the next step, so an
        # asynchronous copy still reading them would race with the update.
        # `best_fn` too, although the preservation policy decides what is kept: orbax writes a
        # checkpoint's metrics to disk only when `best_fn` is set. Without them a resumed run's manager
        # saw the earlier checkpoints without metrics, BestN dropped the best one at the next save,
        # and the export at the end failed to restore it.
        options = ocp.CheckpointManagerOptions(preservation_policy=preserve, enable_async_checkpointing=False,
                                               create=True, best_fn=metric_of,
                                               best_mode="max" if greater_is_better else "min")
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "progress"))

    def save(self, step: int, state: TrainState, progress: dict[str, Any], metrics: dict[str, float] | None) -> None:
        args = self._ocp.args.Composite(state=self._ocp.args.StandardSave(state),
                                        progress=self._ocp.args.JsonSave(progress))
        metrics = None if metrics is None else dict(metrics, **{STEP_KEY: step})
        self._manager.save(step, args=args, metrics=metrics, force=True)
        self._manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def restore(self, step: int, like: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """The state (into the structure, dtypes and shardings of `like`) and progress of `step`."""
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
        args = self._ocp.args.Composite(state=self._ocp.args.StandardRestore(target),
                                        progress=self._ocp.args.JsonRestore())
        try:
            restored = self._manager.restore(step, args=args)
        except (ValueError, KeyError) as err:
            raise ValueError(f"{self.directory}/{step}: does not match this run's model or optimizer: {err}") from None
        return restored["state"], dict(restored["progress"])

    def close(self) -> None:
        self._manager.close()
