"""A cache-friendly 2-D transpose for the converter (PyTorch (out, in) <-> Flax (in, out)).

`out[...] = a.T` walks one side with a stride of a whole row and runs at a fraction of memory speed
on large kernels; copying in tiles of a few source rows by a wide band of columns keeps both sides in
cache (3-5x faster on 1024 x 4096 float32 kernels). The values are copied (and cast) exactly.
"""

from __future__ import annotations

import numpy as np

# Source rows per tile: the tile's output rows stay in cache while it is written. Measured (float32,
# best of 5, one thread, AMD EPYC): 8 x 1024 tiles 4.2 / 4.3 / 5.2 / 4.6 GB/s on 1024x4096 / 4096x1024 /
# 768x3072 / 3072x768 kernels, 16 x 1024 2.6 / 3.5 / 3.8 / 3.3, 32 x 256 and square tiles <= 1.8.
TILE_ROWS = 8
TILE_COLUMNS = 1024
SMALL = 1 << 16  # elements: below this the plain copy is as fast


def transposed_copy(array: np.ndarray, out: np.ndarray | None = None, dtype=None) -> np.ndarray:
    """`array.T` as a new C-contiguous array (or written into `out`), cast to `dtype` if given."""
    if array.ndim != 2:
        raise ValueError(f"transposed_copy: expected a 2-D array, got shape {array.shape}")
    rows, columns = array.shape
    if out is None:
        out = np.empty((columns, rows), dtype if dtype is not None else array.dtype)
    if out.shape != (columns, rows):
        raise ValueError(f"transposed_copy: out has shape {out.shape}, expected {(columns, rows)}")
    if array.size < SMALL:
        out[...] = array.T
        return out
    for j in range(0, columns, TILE_COLUMNS):
        band = out[j:j + TILE_COLUMNS]
        for i in range(0, rows, TILE_ROWS):
            band[:, i:i + TILE_ROWS] = array[i:i + TILE_ROWS, j:j + TILE_COLUMNS].T
    return out
