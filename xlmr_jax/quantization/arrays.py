"""Quantising one kernel (on the host, through qwix's array-level API) and reading it back inside
the layer (dequantise-and-matmul), with 4-bit values packed two per byte.

Why qwix only at the array level: `qwix.quantize_model` intercepts the modules it sees when the
model runs, but our layers are merged inside `lax.scan` from one stacked state, so it reaches only
the heads (`lm_head.dense`, 1 of 27 kernels). Its `QArray` also keeps 4-bit values in jnp.int4 /
uint4, which XLA's CPU backend stores at one byte per element. So qwix computes the quantisation
here (calibration, rounding, the NF4 code book), and the stored form is ours: int8 values, or
4-bit values packed two per byte along the input axis, plus scales shaped like the kernel (so they
shard with its logical axes); the dequantisation runs in the layer, inside the scan body.

Stored fields of a kernel (in, out) (stacked kernels add the leading `layers` axis):
  int8: qvalue int8 (in, out), scale f32 (1, out)                      per output channel
  int4: qvalue uint8 (in/2, out), scale f32 (in/B, out)               blocks of B input rows
  nf4:  qvalue uint8 (in/2, out), scale_qvalue int8 (in/B, out),      the block scales quantised
        scale_scale f32 (1, out), scale_offset f32 (1, out)           again (double quantisation)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from xlmr_jax.quantization.schemes import QuantizationScheme, block_size_for

# The NF4 code book (QLoRA, Appendix E), the same as qwix's and bitsandbytes'.
NF4_CODE = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                     -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                     0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                     0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)


def field_shapes(scheme: QuantizationScheme, in_features: int, out_features: int) -> dict[str, tuple]:
    """{field: (shape, dtype)} of one kernel's stored form."""
    if scheme.name == "int8":
        return {"qvalue": ((in_features, out_features), np.int8),
                "scale": ((1, out_features), np.float32)}
    if in_features % 2:
        raise ValueError(f"{scheme.name}: packing two 4-bit values per byte needs an even input size, "
                         f"got {in_features}")
    blocks = in_features // block_size_for(scheme, in_features)
    fields = {"qvalue": ((in_features // 2, out_features), np.uint8)}
    if scheme.double_quant:
        fields.update(scale_qvalue=((blocks, out_features), np.int8),
                      scale_scale=((1, out_features), np.float32),
                      scale_offset=((1, out_features), np.float32))
    else:
        fields["scale"] = ((blocks, out_features), np.float32)
    return fields


@functools.lru_cache(maxsize=64)
def _quantizer(scheme: QuantizationScheme, shape: tuple[int, int]):
    import qwix

    in_features = shape[0]
    block = block_size_for(scheme, in_features)

    def quantize(kernel):
        kernel = kernel.astype(jnp.float32)
        if scheme.name == "int8":
            q = qwix.quantize(kernel, jnp.int8, channelwise_axes=[1])
            return {"qvalue": q.qvalue, "scale": q.scale}
        q = qwix.quantize(kernel, "nf4" if scheme.name == "nf4" else jnp.int4, channelwise_axes=[1], tiled_axes={0: block})
        nibbles = q.qvalue.astype(jnp.uint8) & 0xF  # int4 two's complement or nf4 code index
        fields = {"qvalue": nibbles[0::2] | (nibbles[1::2] << 4)}
        if not scheme.double_quant:
            fields["scale"] = q.scale
            return fields
        # double quantisation (as bitsandbytes): block scales minus their mean, in int8, with one
        # float scale per output channel
        offset = jnp.mean(q.scale, axis=0, keepdims=True)
        sq = qwix.quantize(q.scale - offset, jnp.int8, channelwise_axes=[1])
        fields.update(scale_qvalue=sq.qvalue, scale_scale=sq.scale, scale_offset=offset)
        return fields

    return jax.jit(quantize)


def host_device():
    return jax.local_devices(backend="cpu")[0]


def quantize_kernel(kernel: np.ndarray, scheme: QuantizationScheme) -> dict[str, np.ndarray]:
    """The stored fields of one (in, out) kernel, as host arrays (computed on the host's CPU device)."""
    if kernel.ndim != 2:
        raise ValueError(f"quantize_kernel expects one (in, out) kernel, got shape {kernel.shape}")
    cpu = host_device()
    with jax.default_device(cpu):
        out = _quantizer(scheme, tuple(kernel.shape))(jax.device_put(np.asarray(kernel), cpu))
    expected = field_shapes(scheme, *kernel.shape)
    return {name: np.asarray(out[name]).astype(dtype).reshape(shape) for name, (shape, dtype) in expected.items()}


def quantize_stacked(read_layer, leading: tuple[int, ...], in_features: int, out_features: int,
                     scheme: QuantizationScheme) -> dict[str, np.ndarray]:
    """Fields of a kernel with leading (stacked) axes, quantised one (in, out) slice at a time:
    `read_layer(index)` returns the float slice at `index` (a tuple over the leading axes)."""
    shapes = field_shapes(scheme, in_features, out_features)
    out = {name: np.empty(tuple(leading) + shape, dtype) for name, (shape, dtype) in shapes.items()}
    for index in np.ndindex(*leading):
        for name, value in quantize_kernel(read_layer(index), scheme).items():
            out[name][index] = value
    return out


# -- inside the layer ----------------------------------------------------------------------------


def _unpack(packed: jax.Array) -> jax.Array:
    """(..., in/2, out) bytes -> (..., in, out) nibbles (uint8), rows 2i and 2i+1 from byte row i."""
    low, high = packed & 0xF, packed >> 4
    both = jnp.stack([low, high], axis=-2)  # (..., in/2, 2, out)
    return both.reshape(*packed.shape[:-2], packed.shape[-2] * 2, packed.shape[-1])


def block_scales(fields: dict[str, jax.Array], scheme: QuantizationScheme) -> jax.Array:
    """The per-block (or per-channel) scales in float32, undoing the double quantisation."""
    if scheme.double_quant:
        return fields["scale_qvalue"].astype(jnp.float32) * fields["scale_scale"] + fields["scale_offset"]
    return fields["scale"].astype(jnp.float32)


def dequantize(fields: dict[str, jax.Array], scheme: QuantizationScheme, dtype) -> jax.Array:
    """The (..., in, out) kernel in `dtype`."""
    scales = block_scales(fields, scheme).astype(dtype)
    q = fields["qvalue"]
    if scheme.name == "int8":
        return q.astype(dtype) * scales
    nibbles = _unpack(q)
    if scheme.name == "nf4":
        values = jnp.asarray(NF4_CODE, dtype)[nibbles.astype(jnp.int32)]
    else:
        signed = nibbles.astype(jnp.int8)
        values = jnp.where(signed >= 8, signed - 16, signed).astype(dtype)
    in_features, out_features = values.shape[-2:]
    blocks = scales.shape[-2]
    grouped = values.reshape(*values.shape[:-2], blocks, in_features // blocks, out_features)
    return (grouped * scales[..., :, None, :]).reshape(values.shape)


def quantized_matmul(x: jax.Array, fields: dict[str, jax.Array], scheme: QuantizationScheme, dtype,
                     precision=None) -> jax.Array:
    """x @ kernel in `dtype`. int8: the per-channel scale is applied to the product (one multiply per
    output instead of per weight); 4-bit: the kernel is dequantised, then multiplied."""
    x = x.astype(dtype)
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    if scheme.name == "int8":
        y = jax.lax.dot_general(x, fields["qvalue"].astype(dtype), dims, precision=precision)
        return y * fields["scale"][0].astype(dtype)
    return jax.lax.dot_general(x, dequantize(fields, scheme, dtype), dims, precision=precision)
