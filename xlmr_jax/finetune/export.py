"""The fine-tuned model as a release: HF PyTorch format, the tokenizer and the label maps in
config.json, so `transformers`, `from_pretrained` and our pipelines load it as it is."""

from __future__ import annotations

import os
import shutil

import jax

from xlmr_jax.training.collective_staging import finish_together, open_staging_together
from xlmr_jax.training.steps import model_from_state

ADAPTER_DIR = "adapter"


def export_model(run, state, destination: str) -> str:
    """Write the model of `state` to `destination` (replaced only once the new one is complete);
    with LoRA, the merged model there and the adapters alone in `destination/adapter`.
    Collective: every process calls it; process 0 writes the files."""
    staging, lock = open_staging_together(destination, "export")
    try:
        model = model_from_state(run.model, state, run.trainable)
        adapted = run.config.lora_rank is not None
        if adapted:
            from xlmr_jax.quantization import merge_lora, save_lora

            # The merged model loads anywhere as a plain checkpoint; the adapters alone go beside it.
            merge_lora(model).save_pretrained(staging, overwrite=True)
            save_lora(model, os.path.join(staging, ADAPTER_DIR))
        else:
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
