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
        backbone = bool(hf_prefix) and dotted.startswith(hf_prefix + ".")
        relative = dotted[len(hf_prefix) + 1:] if backbone else dotted
        if not hf_prefix and relative.startswith(table.BACKBONE_ROOTS):
            backbone = True
        rule = table.rule_for_flax_path(relative)
        assert rule is not None, f"no table rule writes {dotted}"
        value = np.asarray(var[...], dtype=np.float32)
        layers = range(value.shape[0]) if rule.stacked else [None]
        for layer in layers:
            tensor = value[layer] if layer is not None else value
            if rule.transform == table.TRANSPOSE:
                tensor = tensor.T
            key = rule.hf_key(layer)
            out[f"{hf_prefix}.{key}" if backbone and hf_prefix else key] = tensor
    return out
