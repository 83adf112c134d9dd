"""Training checkpoints (parameters + optimizer state + step) written and read collectively.

Orbax does the I/O: on several processes every process calls `save_train_state` together and
writes only the shards its devices hold (one OCDBT file per process), with one manifest for the
whole state; it writes to a temporary directory and commits by rename, so an interrupted save
leaves nothing that looks complete. `restore_train_state` reads into the shardings of the state
you pass, on any mesh (a checkpoint from 8 devices restores onto 1, or the reverse).

These are for resuming training; `save_pretrained` writes the HF / Flax safetensors for release.
"""

from __future__ import annotations

import os

import jax

from xlmr_jax.training.steps import TrainState


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def save_train_state(directory: str | os.PathLike, state: TrainState, *, overwrite: bool = False) -> str:
    """Save `state` to `directory` (collective: every process calls it with the same path)."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not overwrite:
        raise FileExistsError(f"checkpoint directory {directory} exists; pass overwrite=True to replace it")
    checkpointer = _checkpointer()
    checkpointer.save(directory, state, force=overwrite)
    checkpointer.wait_until_finished()
    return directory


def restore_train_state(directory: str | os.PathLike, like: TrainState) -> TrainState:
    """Read a saved state into the structure, dtypes and shardings of `like` (e.g. the state that
    `make_train_step` returns for a model loaded with the mesh you want)."""
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no training checkpoint at {directory}")
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    try:
        return _checkpointer().restore(directory, target)
    except (ValueError, KeyError) as err:
        raise ValueError(f"{directory}: does not match the state given (model or optimizer differ?): {err}") from None
