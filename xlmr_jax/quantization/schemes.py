"""The weight-only quantisation schemes: what is stored per kernel and how it is read back."""

from __future__ import annotations

import dataclasses

BLOCK_SIZE = 64  # 4-bit: one scale per 64 input rows of each output column (bitsandbytes' blocksize)


@dataclasses.dataclass(frozen=True)
class QuantizationScheme:
    """`name`: int8 (per-output-channel scales), int4 (block-wise scales) or nf4 (block-wise
    NormalFloat4 with double-quantised scales). 4-bit values are stored two per byte."""

    name: str
    bits: int
    block_size: int | None  # None: one scale per output channel
    double_quant: bool = False

    @property
    def packed(self) -> bool:
        return self.bits == 4


SCHEMES: dict[str, QuantizationScheme] = {
    "int8": QuantizationScheme("int8", 8, None),
    "int4": QuantizationScheme("int4", 4, BLOCK_SIZE),
    "nf4": QuantizationScheme("nf4", 4, BLOCK_SIZE, double_quant=True),
}


def resolve_scheme(quantization: str | QuantizationScheme) -> QuantizationScheme:
    """A scheme from its name; an unknown name lists the choices."""
    if isinstance(quantization, QuantizationScheme):
        return quantization
    if not isinstance(quantization, str) or quantization not in SCHEMES:
        raise ValueError(f"quantization={quantization!r}: expected one of {', '.join(SCHEMES)} "
                         "(or None for no quantisation)")
    return SCHEMES[quantization]


def block_size_for(scheme: QuantizationScheme, in_features: int) -> int:
    """Rows sharing one scale: the scheme's block, or the whole input when it does not divide it
    (tiny test models; every released size is a multiple of 64)."""
    if scheme.block_size is None:
        return in_features
    return scheme.block_size if in_features % scheme.block_size == 0 else in_features
