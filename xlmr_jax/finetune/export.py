"""The fine-tuned model as a release: HF PyTorch format, the tokenizer and the label maps in
config.json, so `transformers`, `from_pretrained` and our pipelines load it as it is."""

from __future__ import annotations

import os
import shutil

import jax

from xlmr_jax.training.collective_staging import finish_together, open_staging_together
from xlmr_jax.training.steps import model_from_state


def export_model(run, state, destination: str) -> str:
    """Write the model of `state` to `destination` (replaced only once the new one is complete).
    Collective: every process calls it; process 0 writes the files."""
    staging, lock = open_staging_together(destination, "export")
    try:
        model = model_from_state(run.model, state)
        model.save_pretrained(staging, overwrite=True)
        if jax.process_index() == 0:
            run.tokenizer.save_pretrained(staging)
        finish_together(staging, destination)
    except BaseException:
        if jax.process_index() == 0:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return destination
