"""The quantised streaming load: each kernel is read one (in, out) layer slice at a time, quantised
on the host and placed in its sharding; the host never holds more than one quantised leaf and one
float slice. Everything else loads exactly as without quantisation."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
from flax import nnx

from xlmr_jax.quantization import arrays as qa
from xlmr_jax.quantization.linear import place_fields, swap_abstract
from xlmr_jax.quantization.schemes import QuantizationScheme


def check_not_prequantized(directory: str) -> None:
    """A checkpoint quantised already (bitsandbytes, GPTQ, ...: `quantization_config` in its
    config.json) holds integer tensors and their own scales: quantising it again is refused."""
    path = os.path.join(directory, "config.json")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError):
        return  # read_config reports a missing or broken config.json
    quant = raw.get("quantization_config") if isinstance(raw, dict) else None
    if quant:
        method = quant.get("quant_method", "unknown method") if isinstance(quant, dict) else "unknown method"
        raise ValueError(f"{path}: the checkpoint is quantised already ({method}, `quantization_config`); "
                         "load a float checkpoint to quantise it")


def load_quantized(planned, scheme: QuantizationScheme):
    """The model of a `planned_checkpoint`, its kernels quantised as they are read."""
    from xlmr_jax.weights.load import materialise, read_leaf_slice

    model = nnx.merge(planned.graphdef, planned.state)  # abstract
    kernels = swap_abstract(model, scheme)
    kernel_paths = {info.path for info in kernels}
    graphdef, state = nnx.split(model)
    plain = {path: leaf for path, leaf in planned.leaves.items() if path not in kernel_paths}
    arrays = materialise(planned.checkpoint, plain, planned.sharding_for)
    arrays.update({p: a for p, a in planned.initialised.items() if p not in kernel_paths})
    for info in kernels:
        if info.path in planned.initialised:  # a fresh head: already on device, small
            fresh = planned.initialised[info.path]

            def read(index, fresh=fresh):
                return np.asarray(jax.device_get(fresh[index]), np.float32)
        else:
            leaf = dataclasses.replace(planned.leaves[info.path], dtype=np.dtype(np.float32))

            def read(index, leaf=leaf):
                rows = tuple(slice(i, i + 1) for i in index)
                return read_leaf_slice(planned.checkpoint, leaf, rows)[(0,) * len(index)]

        host = qa.quantize_stacked(read, info.leading, info.in_features, info.out_features, scheme)
        placed = place_fields(info, host, planned.sharding_for(info.path, info.shape))
        del host
        for name, array in placed.items():
            arrays[info.path + (name,)] = array
    for path, var in nnx.to_flat_state(state):
        var.set_value(arrays[tuple(str(p) for p in path)])
    return nnx.merge(graphdef, state)
