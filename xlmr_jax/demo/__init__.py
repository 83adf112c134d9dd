"""The main job: a small XLM-R trained by this project (`mini-xlm-roberta`), its predictions, and
parity with the reference; plus the random-weight `tiny-xlm-roberta` the parity tests use."""

import os

DEMO_CHECKPOINT = os.path.join(os.path.dirname(__file__), "mini-xlm-roberta")
"""16 languages, 8000 pieces, 4 layers x 256, masked-LM pretrained by `python -m xlmr_jax.demo.train_model`."""
TINY_CHECKPOINT = os.path.join(os.path.dirname(__file__), "tiny-xlm-roberta")
"""300 pieces, 2 layers x 64, every weight random: rebuilt bit for bit by `python -m xlmr_jax.demo.make_checkpoint`."""
