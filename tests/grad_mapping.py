"""Map our (stacked) parameter tree to the reference's per-layer tensors through the weight table."""

from __future__ import annotations

import numpy as np
from flax import nnx

from xlmr_jax.weights import table


def per_reference_key(tree, hf_prefix: str) -> dict[str, np.ndarray]:
    """{HF key: array in HF layout} for every leaf of an NNX state (params or their gradients)."""
    out = {}
    for path, var in nnx.to_flat_state(tree):
        dotted = ".".join(str(p) for p in path)
        rule = table.rule_for_flax_path(table.split_model_path(dotted, hf_prefix)[0])
        assert rule is not None, f"no table rule writes {dotted}"
        value = np.asarray(var[...], dtype=np.float32)
        layers = range(value.shape[0]) if rule.stacked else [None]
        for layer in layers:
            tensor = value[layer] if layer is not None else value
            if rule.transform == table.TRANSPOSE:
                tensor = tensor.T
            out[table.hf_name(rule, hf_prefix, layer)] = tensor
    return out
