"""`from_pretrained` for every model class: config from the checkpoint, weights streamed in."""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig

logger = logging.getLogger("xlmr_jax")

CONFIG_NAME = "config.json"


def _default_sharding(path, shape):
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])


class PreTrainedMixin:
    """Adds `from_pretrained` to a model class. Subclasses set `hf_prefix` ("roberta" for heads,
    "" for the bare model) and `hf_architecture` (the reference class name)."""

    hf_prefix: str = "roberta"
    hf_architecture: str = ""

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        seed: int = 0,
        config: XLMRobertaConfig | None = None,
        **kwargs: Any,
    ):
        """Load an HF PyTorch checkpoint directory (`config.json` + `model.safetensors`, or shards
        with `model.safetensors.index.json`).

        `dtype` is the compute dtype, `param_dtype` the storage dtype of the params. Keyword
        arguments that the model constructor takes (e.g. `add_pooling_layer`) go to it; the others
        change the config (e.g. `num_labels=3`, `is_decoder=True`). A head that the checkpoint
        lacks is initialised from `seed` and reported with a warning; nothing else is filled
        silently.
        """
        from xlmr_jax.weights.checkpoint import CheckpointError, SafetensorsCheckpoint, find_weight_files
        from xlmr_jax.weights.load import materialise, plan_load

        directory = os.fspath(path)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"checkpoint directory not found: {directory}")
        ctor_params = set(inspect.signature(cls.__init__).parameters) - {"self", "config", "dtype",
                                                                          "param_dtype", "rngs"}
        ctor_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in ctor_params}
        if config is None:
            config_path = os.path.join(directory, CONFIG_NAME)
            if not os.path.isfile(config_path):
                raise CheckpointError(f"no {CONFIG_NAME} in {directory}")
            config = XLMRobertaConfig.from_json_file(config_path)
        if kwargs:
            config = config.replace(**kwargs)

        def build():
            return cls(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed), **ctor_kwargs)

        abstract = nnx.eval_shape(build)
        graphdef, state = nnx.split(abstract)
        files, index = find_weight_files(directory)
        with SafetensorsCheckpoint(files, index) as checkpoint:
            leaves, report = plan_load(state, checkpoint, cls.hf_prefix, config, source=directory)
            arrays = materialise(checkpoint, leaves, _default_sharding)
        if report.initialised:
            arrays.update(_initialise_leaves(build, report.initialised))
            logger.warning("%s: newly initialised from seed %d (not in %s): %s",
                           cls.__name__, seed, directory, ", ".join(report.initialised))
        if report.unused:
            logger.warning("%s: checkpoint tensors not used by this model (another head's): %s",
                           cls.__name__, ", ".join(report.unused))
        for path_, var in nnx.to_flat_state(state):
            var.set_value(arrays[tuple(str(p) for p in path_)])
        return nnx.merge(graphdef, state)


def _initialise_leaves(build, dotted_paths: list[str]) -> dict[tuple[str, ...], jax.Array]:
    """Fresh values for a few leaves only: the whole constructor is traced, but jit keeps just
    the requested outputs, so the rest of the model is never materialised."""
    wanted = [tuple(p.split(".")) for p in dotted_paths]

    @jax.jit
    def init():
        flat = {tuple(str(p) for p in path): var[...] for path, var in nnx.to_flat_state(nnx.state(build()))}
        return [flat[p] for p in wanted]

    return dict(zip(wanted, init(), strict=True))
