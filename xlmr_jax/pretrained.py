"""`from_pretrained` / `save_pretrained` for every model class: config from the checkpoint,
weights streamed in (or out) through the one weight table."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig

logger = logging.getLogger("xlmr_jax")

CONFIG_NAME = "config.json"
# What a hub download fetches: configs, safetensors weights and tokenizer files, nothing else.
HUB_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json", "sentencepiece.bpe.model",
                "tokenizer_config.json", "special_tokens_map.json"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_pretrained_path(path_or_id: str | os.PathLike, revision: str | None = None) -> str:
    """A local directory as is; otherwise a hub id (`FacebookAI/xlm-roberta-base`) downloaded or
    found in the local hub cache through `huggingface_hub` (honours HF_HUB_OFFLINE)."""
    path = os.fspath(path_or_id)
    if os.path.isdir(path):
        if not os.access(path, os.R_OK | os.X_OK):
            raise PermissionError(f"checkpoint directory {path} is not readable (permission denied)")
        return path
    if os.path.isfile(path):
        raise NotADirectoryError(f"{path} is a file: pass the checkpoint directory that holds it "
                                 f"({os.path.dirname(path) or '.'})")
    if os.path.lexists(path):  # e.g. a dangling link or a link loop: a local path, never a hub id
        try:
            os.stat(path)
        except OSError as err:
            raise FileNotFoundError(f"checkpoint directory {path} cannot be opened "
                                    f"({err.strerror})") from None
        raise FileNotFoundError(f"checkpoint directory not found: {path} (not a directory)")
    if not _REPO_ID.match(path) or path.count("/") > 1:
        raise FileNotFoundError(f"checkpoint directory not found: {path}")
    try:
        import huggingface_hub
    except ImportError:
        raise FileNotFoundError(
            f"checkpoint directory not found: {path} (to load it as a hub id, pip install 'xlmr-jax[hub]')"
        ) from None
    try:
        return huggingface_hub.snapshot_download(path, revision=revision, allow_patterns=HUB_PATTERNS)
    except Exception as err:  # noqa: BLE001 - hub errors are many; all mean "cannot get it"
        raise FileNotFoundError(f"{path}: not a local directory, and the hub could not provide it "
                                f"({type(err).__name__}: {err})") from None


def read_config(directory: str) -> XLMRobertaConfig:
    from xlmr_jax.weights.checkpoint import CheckpointError

    config_path = os.path.join(directory, CONFIG_NAME)
    if not os.path.lexists(config_path):  # anything else there is reported by from_json_file
        raise CheckpointError(f"no {CONFIG_NAME} in {directory}")
    return XLMRobertaConfig.from_json_file(config_path)


@dataclasses.dataclass
class PlannedCheckpoint:
    checkpoint: Any
    graphdef: Any
    state: Any
    leaves: dict
    report: Any
    initialised: dict
    config: XLMRobertaConfig
    sharding_for: Any


@contextlib.contextmanager
def planned_checkpoint(cls, directory: str, config: XLMRobertaConfig, *, dtype=jnp.float32,
                       param_dtype=jnp.float32, seed: int = 0, ctor_kwargs: dict | None = None,
                       allow_pickle: bool = False, keep_source_dtype: bool = False, mesh=None, rules=None):
    """Open a checkpoint and match it against `cls`: every problem raised at once; missing heads
    initialised (and said out loud). Yields a PlannedCheckpoint while the files are open."""
    from xlmr_jax.weights.checkpoint import Checkpoint, find_checkpoint_files
    from xlmr_jax.weights.load import plan_load

    ctor_kwargs = ctor_kwargs or {}

    def build():
        return cls(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed), **ctor_kwargs)

    graphdef, state = nnx.split(nnx.eval_shape(build))
    # every leaf's sharding (and the divisibility checks) before a byte is read
    sharding_for = _default_sharding if mesh is None else _mesh_sharding(state, mesh, rules)
    with Checkpoint(find_checkpoint_files(directory, allow_pickle)) as checkpoint:
        leaves, report = plan_load(state, checkpoint, cls.hf_prefix, config, source=directory)
        if keep_source_dtype:
            for leaf in leaves.values():
                if leaf.sources:
                    leaf.dtype = checkpoint.tensors[next(iter(leaf.sources.values()))].dtype
        initialised = _initialise_leaves(build, report.initialised, leaves, sharding_for) if report.initialised else {}
        if report.initialised:
            logger.warning("%s: newly initialised from seed %d (not in %s): %s",
                           cls.__name__, seed, directory, ", ".join(report.initialised))
        if report.unused:
            logger.warning("%s: checkpoint tensors not used by this model (another head's): %s",
                           cls.__name__, ", ".join(report.unused))
        yield PlannedCheckpoint(checkpoint, graphdef, state, leaves, report, initialised, config, sharding_for)


def _default_sharding(path, shape):
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _mesh_sharding(abstract_state, mesh, rules):
    """Shardings of every leaf, all computed (and checked for divisibility) before any read."""
    from xlmr_jax.sharding import state_shardings

    shardings = state_shardings(abstract_state, mesh, rules)
    return lambda path, shape: shardings[path]


class PreTrainedMixin:
    """Adds `from_pretrained` and `save_pretrained` to a model class. Subclasses set `hf_prefix`
    ("roberta" for heads, "" for the bare model) and `hf_architecture` (the reference class name)."""

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
        allow_pickle: bool = False,
        revision: str | None = None,
        mesh=None,
        rules=None,
        quantization: str | None = None,
        **kwargs: Any,
    ):
        """Load a checkpoint directory or hub id, in HF PyTorch format (`config.json` +
        `model.safetensors`, or shards with `model.safetensors.index.json`; `pytorch_model.bin`
        only with `allow_pickle=True`) or our Flax format (`flax_model.safetensors`).

        `dtype` is the compute dtype, `param_dtype` the storage dtype of the params. Keyword
        arguments that the model constructor takes (e.g. `add_pooling_layer`) go to it; the others
        change the config (e.g. `num_labels=3`, `is_decoder=True`). A head that the checkpoint
        lacks is initialised from `seed` and reported with a warning; nothing else is filled
        silently.

        With `mesh` (see `xlmr_jax.sharding.make_mesh`), every parameter is created directly in its
        sharding under `rules` ("dp", "fsdp" (default), "tp", "fsdp_tp" or a dict logical axis ->
        mesh axis): each device's slice is read from the files on its own, so no host ever holds
        the whole model (on several hosts, each reads only the slices of its own devices).

        `quantization` ("int8", "int4" or "nf4"): weight-only quantisation of every encoder and head
        matmul kernel, each quantised as it is read (see `xlmr_jax.quantization`); `dtype` stays the
        compute dtype.
        """
        from xlmr_jax.weights.load import materialise

        scheme = None
        if quantization is not None:
            from xlmr_jax.quantization import resolve_scheme

            scheme = resolve_scheme(quantization)  # an unknown name fails before anything is read
        directory = resolve_pretrained_path(path, revision)
        if scheme is not None:
            from xlmr_jax.quantization.load import check_not_prequantized

            check_not_prequantized(directory)
        ctor_params = set(inspect.signature(cls.__init__).parameters) - {"self", "config", "dtype",
                                                                          "param_dtype", "rngs"}
        ctor_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in ctor_params}
        config = config if config is not None else read_config(directory)
        if kwargs:
            config = config.replace(**kwargs)
        with planned_checkpoint(cls, directory, config, dtype=dtype, param_dtype=param_dtype, seed=seed,
                                ctor_kwargs=ctor_kwargs, allow_pickle=allow_pickle, mesh=mesh,
                                rules=rules) as planned:
            if scheme is not None:
                from xlmr_jax.quantization.load import load_quantized

                return load_quantized(planned, scheme)
            arrays = materialise(planned.checkpoint, planned.leaves, planned.sharding_for)
        arrays.update(planned.initialised)
        for path_, var in nnx.to_flat_state(planned.state):
            var.set_value(arrays[tuple(str(p) for p in path_)])
        return nnx.merge(planned.graphdef, planned.state)

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        *,
        format: str = "pytorch",
        dtype=None,
        max_shard_size: int | str = "5GB",
        overwrite: bool = False,
    ) -> dict:
        """Write the model as an HF PyTorch checkpoint (`format="pytorch"`: `transformers` loads it
        with no missing/unexpected weights) or in our Flax format (`format="flax"`). Streams one
        tensor at a time into a temp directory renamed into place when complete. `dtype` casts
        the stored weights (default: as the params are). Returns a summary (tensors, bytes, ...).
        On several processes every process calls it (the params are gathered leaf by leaf, a
        collective) and process 0 writes the files."""
        from xlmr_jax.weights.sources import ModelSource

        _refuse_unsaveable(self)
        return write_from_source(ModelSource(self), type(self), self.config, directory, format=format,
                                 dtype=dtype, max_shard_size=max_shard_size, overwrite=overwrite)


def _refuse_unsaveable(model) -> None:
    """A quantised model is refused (its kernels are not the checkpoint's floats: saving them as HF
    weights would pass off rounded values as the model), as is a model holding LoRA adapters."""
    from xlmr_jax.quantization.linear import QuantizedKernel, linear_modules
    from xlmr_jax.quantization.lora import LoRALinear

    if linear_modules(model, LoRALinear):
        raise ValueError("save_pretrained: this model holds LoRA adapters; save them alone with "
                         "xlmr_jax.quantization.lora.save_lora(model, directory), or merge them first: "
                         "merge_lora(model).save_pretrained(...)")

    quantised = linear_modules(model, QuantizedKernel)
    if quantised:
        raise ValueError(
            f"save_pretrained: this {type(model).__name__} is quantised ({quantised[0][1].scheme.name}); HF "
            "checkpoints hold float weights. Save the float checkpoint it was loaded from, or write the "
            "dequantised values knowingly: xlmr_jax.quantization.dequantize_model(model).save_pretrained(...)")


def reference_architecture(cls, config: XLMRobertaConfig) -> str:
    """The reference class name for a model class and layout ("XLMRobertaXLForMaskedLM" for XL).
    It needs only the class's own name and the config, so writing imports no model module (the
    modules import this file: a lazy import of the registry here made an import circle)."""
    name = cls.hf_architecture
    return name.replace("XLMRoberta", "XLMRobertaXL", 1) if config.pre_layer_norm else name


def write_from_source(source, cls, config: XLMRobertaConfig, directory, *, format: str, dtype=None,
                      max_shard_size="5GB", overwrite=False, on_tensor=None, on_plan=None,
                      extra_files=None, workers: int = 0) -> dict:
    """Write the leaves of `source` (a model or a planned checkpoint) as a `cls` checkpoint.
    `on_plan(tensors)` sees the list of tensors before writing, `on_tensor(t)` each one written;
    `workers` > 0 threads compute tensors while others are written (single process only)."""
    from xlmr_jax import __version__
    from xlmr_jax.weights.export import FLAX_FORMAT_VERSION, flax_tensors, pytorch_tensors, write_checkpoint

    if format not in ("pytorch", "flax"):
        raise ValueError(f"format={format!r}: expected 'pytorch' or 'flax'")
    dtype = None if dtype is None else np.dtype(jnp.dtype(dtype))
    stored = {np.dtype(leaf.dtype) for leaf in source.leaves} if dtype is None else {dtype}
    config_dict = config.to_dict()
    config_dict["architectures"] = [reference_architecture(cls, config)]
    config_dict["dtype"] = str(jnp.dtype(max(stored, key=lambda d: d.itemsize))) if stored else "float32"
    if format == "pytorch":
        tensors = pytorch_tensors(source, cls.hf_prefix, dtype)
        metadata = {"format": "pt"}
    else:
        tensors = flax_tensors(source, dtype)
        metadata = {"format": "flax", "xlmr_jax_format_version": FLAX_FORMAT_VERSION,
                    "model_class": cls.__name__, "xlmr_jax_version": __version__}
    if on_plan is not None:
        on_plan(tensors)
    if jax.process_count() > 1:
        return _write_from_several_processes(tensors, directory, config_dict, format, metadata,
                                             max_shard_size, overwrite, on_tensor, extra_files)
    return write_checkpoint(os.fspath(directory), tensors, config_dict, format=format, metadata=metadata,
                            max_shard_size=max_shard_size, overwrite=overwrite, on_tensor=on_tensor,
                            extra_files=extra_files, workers=workers)


def _write_from_several_processes(tensors, directory, config_dict, format, metadata, max_shard_size, overwrite,
                                  on_tensor, extra_files) -> dict:
    """Every process walks the same tensors (each leaf is gathered collectively); process 0 alone
    writes the files, the others only take part in the gathers. All return once the files exist."""
    from jax.experimental import multihost_utils

    from xlmr_jax.weights.export import write_checkpoint

    if jax.process_index() == 0:
        summary = write_checkpoint(os.fspath(directory), tensors, config_dict, format=format, metadata=metadata,
                                   max_shard_size=max_shard_size, overwrite=overwrite, on_tensor=on_tensor,
                                   extra_files=extra_files)
    else:
        for tensor in tensors:
            for _ in tensor.chunks():
                pass
        summary = {"tensors": len(tensors), "bytes": 0, "files": 0, "seconds": 0.0}
    multihost_utils.sync_global_devices(f"xlmr_jax save_pretrained {os.fspath(directory)}")
    return summary


def _initialise_leaves(build, dotted_paths: list[str], leaves, sharding_for) -> dict[tuple[str, ...], jax.Array]:
    """Fresh values for a few leaves only, created in their shardings: the whole constructor is
    traced, but jit keeps just the requested outputs, so the rest of the model is never
    materialised. `leaves` (the load plan) gives their shapes."""
    wanted = [tuple(p.split(".")) for p in dotted_paths]
    out_shardings = [sharding_for(p, leaves[p].shape) for p in wanted]

    @functools.partial(jax.jit, out_shardings=out_shardings)
    def init():
        flat = {tuple(str(p) for p in path): var[...] for path, var in nnx.to_flat_state(nnx.state(build()))}
        return [flat[p] for p in wanted]

    return dict(zip(wanted, init(), strict=True))
