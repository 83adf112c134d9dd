"""Weight-only quantisation (int8, int4, nf4) of the encoder and head matmul kernels, and LoRA.

    model = XLMRobertaForMaskedLM.from_pretrained(path, quantization="nf4", dtype=jnp.bfloat16)

Embeddings (hence the tied decoder), LayerNorms and biases stay as loaded. See `arrays.py` for what
is stored and why qwix is used at the array level only.
"""

from xlmr_jax.quantization.linear import (
    QuantizedKernel,
    QuantizedLinear,
    QuantizedValue,
    dequantize_model,
    is_quantized,
    quantize_model,
    quantized_leaves,
    quantized_scheme,
)
from xlmr_jax.quantization.lora import (
    DEFAULT_TARGETS,
    TARGETS,
    LoRALinear,
    add_lora,
    load_lora,
    lora_filter,
    merge_lora,
    save_lora,
)
from xlmr_jax.quantization.schemes import SCHEMES, QuantizationScheme, resolve_scheme

__all__ = [
    "DEFAULT_TARGETS",
    "SCHEMES",
    "TARGETS",
    "LoRALinear",
    "QuantizationScheme",
    "QuantizedKernel",
    "QuantizedLinear",
    "QuantizedValue",
    "add_lora",
    "dequantize_model",
    "is_quantized",
    "load_lora",
    "lora_filter",
    "merge_lora",
    "quantize_model",
    "quantized_leaves",
    "quantized_scheme",
    "resolve_scheme",
    "save_lora",
]
