"""Convert an XLM-R checkpoint between HF PyTorch safetensors and Flax safetensors.

    python convert/convert_checkpoint.py SRC DST --to flax|pytorch [--dtype ...] [--overwrite]

The same as `xlmr-jax convert`; the logic lives in `xlmr_jax.convert` and `xlmr_jax.weights`
(one weight table, shared with `from_pretrained`). See convert/README.md.
"""

import sys

from xlmr_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
