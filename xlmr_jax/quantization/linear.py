"""Quantised linear layers and the swap that puts them in place of a model's `nnx.Linear`s.

Every matmul kernel of the encoder and the heads is an `nnx.Linear` made by `layers.dense`; the
word/position/type embeddings (and so the tied decoder), LayerNorms and biases are not. Swapping
each Linear for a `QuantizedLinear` (same attribute name, same `bias` variable, `kernel` becoming a
`QuantizedKernel` module of stored fields) quantises exactly the kernels. The stacked layers keep
working under `lax.scan`: their fields carry the leading `layers` axis like any other leaf, the
scan slices them, and the layer dequantises its own slice.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from xlmr_jax.quantization import arrays as qa
from xlmr_jax.quantization.schemes import QuantizationScheme, resolve_scheme


class QuantizedValue(nnx.Variable):
    """A stored field of a quantised kernel (values or scales): not an `nnx.Param`, so no optimizer
    or gradient filter on `nnx.Param` ever treats it as trainable."""


class QuantizedKernel(nnx.Module):
    """The stored fields of one kernel (see `arrays.py`). `kernel[...]` gives the dequantised
    kernel in the param dtype, so code reading a Linear's kernel keeps working."""

    def __init__(self, scheme: QuantizationScheme, in_features: int, out_features: int,
                 fields: dict[str, Any], param_dtype):
        self.scheme = scheme
        self.in_features, self.out_features = in_features, out_features
        self.param_dtype = param_dtype
        self.field_names = tuple(fields)
        for name, value in fields.items():
            setattr(self, name, QuantizedValue(value))

    def fields(self) -> dict[str, jax.Array]:
        return {name: getattr(self, name)[...] for name in self.field_names}

    def __getitem__(self, index):
        return qa.dequantize(self.fields(), self.scheme, self.param_dtype)[index]

    @property
    def shape(self) -> tuple[int, ...]:
        lead = self.qvalue.get_value().shape[:-2]
        return (*lead, self.in_features, self.out_features)


class QuantizedLinear(nnx.Module):
    """y = x @ dequantise(kernel) + bias, computed in `dtype` (the model's compute dtype)."""

    def __init__(self, kernel: QuantizedKernel, bias: nnx.Param | None, *, dtype, precision=None):
        self.kernel = kernel
        self.bias = bias
        self.in_features, self.out_features = kernel.in_features, kernel.out_features
        self.use_bias = bias is not None
        self.dtype = dtype
        self.precision = precision

    def __call__(self, x: jax.Array) -> jax.Array:
        y = qa.quantized_matmul(x, self.kernel.fields(), self.kernel.scheme, self.dtype, self.precision)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


@dataclasses.dataclass(frozen=True)
class KernelInfo:
    path: tuple[str, ...]  # the kernel leaf's path in the unquantised model, e.g. (..., 'query', 'kernel')
    leading: tuple[int, ...]  # stacked axes ((layers,) inside the encoder stack)
    in_features: int
    out_features: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.leading, self.in_features, self.out_features)


def linear_modules(model, kind=nnx.Linear) -> list[tuple[tuple[str, ...], Any]]:
    return [(tuple(str(p) for p in path), module) for path, module in nnx.iter_modules(model)
            if isinstance(module, kind)]


def set_module(model, path: tuple[str, ...], module) -> None:
    parent = model
    for name in path[:-1]:
        parent = getattr(parent, name)
    setattr(parent, path[-1], module)


def kernel_info(path: tuple[str, ...], linear: nnx.Linear) -> KernelInfo:
    shape = tuple(linear.kernel.get_value().shape)
    return KernelInfo(path + ("kernel",), shape[:-2], linear.in_features, linear.out_features)


def is_quantized(model) -> bool:
    return any(True for _ in linear_modules(model, QuantizedKernel))


def quantized_leaves(model) -> list[str]:
    """Dotted paths of every quantised kernel (e.g. `roberta.encoder.layer.attention.self.query.kernel`)."""
    return [".".join(path) for path, _ in linear_modules(model, QuantizedKernel)]


def swap_abstract(model, scheme: QuantizationScheme) -> list[KernelInfo]:
    """Replace every Linear of an abstract model (from `nnx.eval_shape`) by a QuantizedLinear of
    abstract fields; returns the kernels replaced."""
    infos = []
    for path, linear in linear_modules(model):
        info = kernel_info(path, linear)
        fields = {name: jax.ShapeDtypeStruct(info.leading + shape, dtype)
                  for name, (shape, dtype) in qa.field_shapes(scheme, info.in_features, info.out_features).items()}
        _swap(model, path, linear, scheme, fields)
        infos.append(info)
    return infos


def _swap(model, path, linear, scheme, fields):
    kernel = QuantizedKernel(scheme, linear.in_features, linear.out_features, fields, linear.param_dtype)
    bias = linear.bias if linear.use_bias else None
    set_module(model, path, QuantizedLinear(kernel, bias, dtype=linear.dtype, precision=linear.precision))


def field_sharding(kernel_sharding: jax.sharding.Sharding, field_shape: tuple[int, ...]) -> jax.sharding.Sharding:
    """A field shards like its kernel (same logical axes, hence the same mesh axes), except along a
    dimension it does not divide (e.g. 12 scale blocks of a 768-row kernel over 8 devices), which
    it keeps whole: scales are 1/64 of the kernel or less."""
    if not isinstance(kernel_sharding, NamedSharding):
        return kernel_sharding
    mesh, spec = kernel_sharding.mesh, tuple(kernel_sharding.spec)
    spec = spec + (None,) * (len(field_shape) - len(spec))
    out = []
    for size, axes in zip(field_shape, spec, strict=True):
        names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        ways = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        out.append(axes if ways > 1 and size % ways == 0 else None)
    return NamedSharding(mesh, PartitionSpec(*out))


def place_fields(info: KernelInfo, fields: dict[str, np.ndarray], kernel_sharding) -> dict[str, jax.Array]:
    """Host fields -> device arrays, each device taking only its slice."""
    return {name: jax.make_array_from_callback(host.shape, field_sharding(kernel_sharding, host.shape),
                                               lambda index, host=host: host[index])
            for name, host in fields.items()}


def quantize_model(model, quantization: str | QuantizationScheme):
    """Quantise a model in memory (its kernels read back one (in, out) slice at a time); returns
    the same model object, its Linears replaced. Loading with `from_pretrained(...,
    quantization=...)` streams instead and never holds the float kernels."""
    scheme = resolve_scheme(quantization)
    if is_quantized(model):
        raise ValueError(f"{type(model).__name__} is already quantised ({quantized_scheme(model)}); "
                         "quantise the float model (from its checkpoint) instead")
    for path, linear in linear_modules(model):
        info = kernel_info(path, linear)
        kernel = linear.kernel[...]

        def read(index, kernel=kernel):
            return np.asarray(jax.device_get(kernel[index]), np.float32)

        host = qa.quantize_stacked(read, info.leading, info.in_features, info.out_features, scheme)
        _swap(model, path, linear, scheme, place_fields(info, host, kernel.sharding))
    return model


def quantized_scheme(model) -> str | None:
    for _, kernel in linear_modules(model, QuantizedKernel):
        return kernel.scheme.name
    return None


def dequantize_model(model, under: str | None = None):
    """The model with every QuantizedLinear (only those below the attribute `under`, if given, e.g.
    a task head to train) replaced by a float `nnx.Linear` holding the dequantised kernel (param
    dtype): what can be saved as an HF checkpoint (the values are the quantised ones, not the
    originals). Returns the same model object."""
    for path, q in linear_modules(model, QuantizedLinear):
        if under is not None and path[:1] != (under,):
            continue
        kernel = q.kernel[...]
        linear = nnx.eval_shape(lambda q=q: nnx.Linear(q.in_features, q.out_features, use_bias=q.use_bias,
                                                       dtype=q.dtype, param_dtype=q.kernel.param_dtype,
                                                       precision=q.precision, rngs=nnx.Rngs(0)))
        linear.kernel = nnx.Param(kernel)
        if q.use_bias:
            linear.bias = q.bias
        set_module(model, path, linear)
    return model
