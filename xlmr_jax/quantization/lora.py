"""LoRA adapters on the stacked layers' projections (QLoRA when the model is quantised).

    model = add_lora(model, rank=8, alpha=16, targets=("query", "value"))
    opt = nnx.Optimizer(model, optax.adamw(1e-4), wrt=lora_filter)   # adapter-sized state only
    grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, lora_filter))(model, batch)
    save_lora(model, "adapters/")            # the adapters alone (+ adapter_config.json)
    merged = merge_lora(model)               # plain float model, saveable as an HF checkpoint

Each target Linear (or QuantizedLinear) of `encoder.layer` becomes a `LoRALinear` that keeps the
base `kernel` and `bias` under their own names (so loading, sharding and the weight table are
unchanged) and adds `lora_a` (layers, in, rank) and `lora_b` (layers, rank, out), both
`nnx.LoRAParam`: y = x W + b + (alpha / rank) x A B. B starts at zero (the model is unchanged
until trained), A uniform in +-1/sqrt(in) (as PEFT).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from xlmr_jax.quantization import arrays as qa
from xlmr_jax.quantization.linear import QuantizedKernel, QuantizedLinear, linear_modules, set_module

# Target name -> module path under `encoder.layer` (cross-attention included where present).
TARGETS: dict[str, str] = {
    "query": r"(attention|crossattention)\.self\.query",
    "key": r"(attention|crossattention)\.self\.key",
    "value": r"(attention|crossattention)\.self\.value",
    "attention_output": r"(attention|crossattention)\.output\.dense",
    "intermediate": r"intermediate\.dense",
    "output": r"output\.dense",
}
DEFAULT_TARGETS = ("query", "key", "value", "attention_output", "intermediate", "output")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# The filter of the trainable leaves: an optax/nnx `wrt`, `nnx.state(model, lora_filter)`.
lora_filter = nnx.LoRAParam


class LoRALinear(nnx.Module):
    """A base projection (float or quantised kernel, frozen) plus a low-rank update."""

    def __init__(self, base: nnx.Linear | QuantizedLinear, rank: int, alpha: float, target: str, key: jax.Array):
        self.kernel = base.kernel
        self.bias = base.bias if base.use_bias else None
        self.in_features, self.out_features = base.in_features, base.out_features
        self.use_bias = base.use_bias
        self.dtype, self.precision = base.dtype, base.precision
        self.rank, self.alpha, self.target = rank, float(alpha), target
        reference = base.kernel.qvalue[...] if isinstance(base.kernel, QuantizedKernel) else base.kernel[...]
        lead = reference.shape[:-2]
        param_dtype = base.kernel.param_dtype if isinstance(base.kernel, QuantizedKernel) else base.param_dtype
        self.param_dtype = param_dtype
        bound = 1.0 / np.sqrt(self.in_features)
        a = jax.random.uniform(key, (*lead, self.in_features, rank), jnp.float32, -bound, bound).astype(param_dtype)
        b = jnp.zeros((*lead, rank, self.out_features), param_dtype)
        sharding = getattr(reference, "sharding", None)
        if isinstance(sharding, NamedSharding):  # adapters are small: replicated on the kernel's mesh
            a, b = (jax.device_put(x, NamedSharding(sharding.mesh, PartitionSpec())) for x in (a, b))
        self.lora_a = nnx.LoRAParam(a)
        self.lora_b = nnx.LoRAParam(b)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def __call__(self, x: jax.Array) -> jax.Array:
        dims = (((x.ndim - 1,), (0,)), ((), ()))
        if isinstance(self.kernel, QuantizedKernel):
            y = qa.quantized_matmul(x, self.kernel.fields(), self.kernel.scheme, self.dtype, self.precision)
        else:
            y = jax.lax.dot_general(x.astype(self.dtype), self.kernel[...].astype(self.dtype), dims,
                                    precision=self.precision)
        xa = jax.lax.dot_general(x.astype(self.dtype), self.lora_a[...].astype(self.dtype), dims,
                                 precision=self.precision)
        y = y + jax.lax.dot_general(xa, self.lora_b[...].astype(self.dtype), dims,
                                    precision=self.precision) * self.scaling
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y

    def merged_kernel(self) -> jax.Array:
        """W + (alpha / rank) A B in float32 (a quantised W dequantised first), in the param dtype."""
        base = self.kernel[...].astype(jnp.float32)
        delta = jnp.einsum("...ir,...ro->...io", self.lora_a[...].astype(jnp.float32),
                           self.lora_b[...].astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
        return (base + self.scaling * delta).astype(self.param_dtype)


def _layer_relative(path: tuple[str, ...]) -> str | None:
    for i in range(len(path) - 1):
        if path[i] == "encoder" and path[i + 1] == "layer":
            return ".".join(path[i + 2:])
    return None


def add_lora(model, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS, *, seed: int = 0):
    """A copy of `model` (arrays shared, not copied) with adapters on `targets` (names of `TARGETS`)
    of every stacked layer. Only the adapters are `nnx.LoRAParam`; train them with `lora_filter`."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be an integer >= 1, got {rank!r}")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not alpha > 0:
        raise ValueError(f"LoRA alpha must be a number > 0, got {alpha!r}")
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"LoRA targets {unknown or list(targets)}: expected names among {', '.join(TARGETS)}")
    model = nnx.clone(model)
    if linear_modules(model, LoRALinear):
        raise ValueError("the model holds LoRA adapters already: merge_lora(model) first, or train these")
    modules = linear_modules(model, (nnx.Linear, QuantizedLinear))
    key = jax.random.key(seed)
    matched = {t: 0 for t in targets}
    for index, (path, linear) in enumerate(modules):
        relative = _layer_relative(path)
        target = next((t for t in targets if relative is not None and re.fullmatch(TARGETS[t], relative)), None)
        if target is None:
            continue
        matched[target] += 1
        set_module(model, path, LoRALinear(linear, rank, alpha, target, jax.random.fold_in(key, index)))
    missing = [t for t, n in matched.items() if n == 0]
    if missing:
        raise ValueError(f"LoRA targets {missing} match no module of this {type(model).__name__}")
    return model


def lora_modules(model) -> list[tuple[tuple[str, ...], LoRALinear]]:
    return linear_modules(model, LoRALinear)


def merge_lora(model):
    """A copy of `model` whose adapters are folded into float kernels (`nnx.Linear`s again). A
    quantised base (QLoRA) is dequantised, every kernel of it: the result is a float model to save
    as an HF checkpoint."""
    model = nnx.clone(model)
    modules = lora_modules(model)
    if not modules:
        raise ValueError(f"this {type(model).__name__} holds no LoRA adapters to merge")
    for path, lora in modules:
        merged = lora.merged_kernel()
        reference = lora.kernel.qvalue[...] if isinstance(lora.kernel, QuantizedKernel) else lora.kernel[...]
        sharding = getattr(reference, "sharding", None)
        if isinstance(sharding, NamedSharding):
            from xlmr_jax.quantization.linear import field_sharding

            merged = jax.device_put(merged, field_sharding(sharding, merged.shape))
        linear = nnx.eval_shape(lambda lora=lora: nnx.Linear(
            lora.in_features, lora.out_features, use_bias=lora.use_bias, dtype=lora.dtype,
            param_dtype=lora.param_dtype, precision=lora.precision, rngs=nnx.Rngs(0)))
        linear.kernel = nnx.Param(merged)
        if lora.use_bias:
            linear.bias = lora.bias
        set_module(model, path, linear)
    from xlmr_jax.quantization.linear import dequantize_model, is_quantized

    return dequantize_model(model) if is_quantized(model) else model


def save_lora(model, directory: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Write the adapters alone: `adapter_model.safetensors` (Flax paths -> arrays) and
    `adapter_config.json` (rank, alpha, targets). Written beside, renamed into place when complete."""
    from safetensors.numpy import save_file

    modules = lora_modules(model)
    if not modules:
        raise ValueError(f"this {type(model).__name__} holds no LoRA adapters to save")
    directory = os.path.abspath(os.fspath(directory))
    if os.path.lexists(directory) and not overwrite:
        raise FileExistsError(f"{directory} exists (pass overwrite=True to replace it)")
    tensors = {}
    for path, lora in modules:
        for name in ("lora_a", "lora_b"):
            tensors[".".join(path + (name,))] = np.asarray(jax.device_get(getattr(lora, name)[...]))
    config = {"rank": modules[0][1].rank, "alpha": modules[0][1].alpha,
              "targets": sorted({lora.target for _, lora in modules}, key=list(TARGETS).index),
              "model_class": type(model).__name__}
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(directory)}.")
    try:
        save_file(tensors, os.path.join(staging, ADAPTER_WEIGHTS))
        with open(os.path.join(staging, ADAPTER_CONFIG), "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2)
        os.chmod(staging, 0o755)
        if os.path.lexists(directory):
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"tensors": len(tensors), "bytes": int(sum(t.nbytes for t in tensors.values())), **config}


def load_lora(model, directory: str | os.PathLike):
    """`model` (the same base the adapters were trained on) with the adapters of `directory`."""
    from safetensors.numpy import load_file

    with open(os.path.join(directory, ADAPTER_CONFIG), encoding="utf-8") as fh:
        config = json.load(fh)
    model = add_lora(model, int(config["rank"]), float(config["alpha"]), config["targets"])
    tensors = load_file(os.path.join(directory, ADAPTER_WEIGHTS))
    expected = {".".join(path + (name,)): getattr(lora, name)
                for path, lora in lora_modules(model) for name in ("lora_a", "lora_b")}
    if set(tensors) != set(expected):
        raise ValueError(f"{directory}: adapters {sorted(set(tensors) ^ set(expected))[:4]} do not match the model")
    for key, var in expected.items():
        if tuple(tensors[key].shape) != tuple(var[...].shape):
            raise ValueError(f"{directory}: {key} has shape {tensors[key].shape}, the model expects {var[...].shape}")
        old = var[...]
        var.set_value(jax.device_put(tensors[key].astype(old.dtype), old.sharding))
    return model
