"""The main job: load the tiny shipped checkpoint, run every model, report parity with the reference."""

import os

TINY_CHECKPOINT = os.path.join(os.path.dirname(__file__), "tiny-xlm-roberta")
