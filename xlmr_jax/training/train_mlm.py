"""The training entry point: masked-LM fine-tuning on a text file, on one device or a mesh over
several processes (`xlmr-jax train-mlm`, or `train_mlm(...)` from Python).

Every process runs the same command. Each reads its own lines of the file (line i goes to process
i mod N), tokenises them to a static (rows, max_length) shape, masks them, and contributes its rows
to the global batch; parameters and optimizer state live sharded on the mesh. At the end the
training state is saved collectively (resumable) and the model is exported as an HF checkpoint,
with the tokenizer files, that `transformers` and `from_pretrained` load.

Nothing the user had is lost: every argument, the checkpoint, the text and the output's place are
checked before the first step; the output is built in a staging directory beside it (created
before step 1, which also proves it writable) and renamed into place only when complete, so an
error, Ctrl-C or a full disk leaves an existing output as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

import jax
import numpy as np
import optax

from xlmr_jax.staging import check_destination
from xlmr_jax.training.collective_staging import finish_together, open_staging_together

logger = logging.getLogger("xlmr_jax")


def read_lines(path: str, process_index: int, process_count: int) -> list[str]:
    """This process's non-empty lines of a UTF-8 text file."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh if line.strip()]
    except FileNotFoundError:
        raise FileNotFoundError(f"training text not found: {path}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None
    mine = lines[process_index::process_count]
    if not mine:
        raise ValueError(f"{path}: no non-empty line for process {process_index} of {process_count}")
    return mine


def train_mlm(
    checkpoint: str,
    text_file: str,
    output: str,
    *,
    steps: int,
    batch_size: int = 8,
    max_length: int = 128,
    learning_rate: float = 5e-5,
    mesh_spec: str = "auto",
    rules: str = "fsdp",
    seed: int = 0,
    log_every: int = 10,
    overwrite: bool = False,
) -> list[float]:
    """Fine-tune `checkpoint` with masked-LM on `text_file`; writes `output/model` (HF format, with
    tokenizer) and `output/train-state` (orbax). Returns the loss of every step. Call
    `xlmr_jax.distributed.initialize(...)` first on several processes."""
    from xlmr_jax import XLMRobertaForMaskedLM
    from xlmr_jax.pretrained import resolve_pretrained_path
    from xlmr_jax.sharding import make_mesh, shard_batch
    from xlmr_jax.tokenizer import XLMRobertaTokenizer
    from xlmr_jax.training.checkpoint import save_train_state
    from xlmr_jax.training.masking import mask_tokens
    from xlmr_jax.training.steps import make_train_step, model_from_state

    process, processes = jax.process_index(), jax.process_count()
    _check_arguments(steps=steps, batch_size=batch_size, max_length=max_length, log_every=log_every,
                     learning_rate=learning_rate, processes=processes)
    directory = resolve_pretrained_path(checkpoint)
    lines = read_lines(text_file, process, processes)
    tokenizer = XLMRobertaTokenizer.from_pretrained(directory)
    mesh = make_mesh(mesh_spec)
    # The output may be none of the inputs, hold one or lie inside one: replacing it would delete them.
    output = check_destination(output, sources=[directory, text_file], overwrite=overwrite, what="output")
    staging, lock = open_staging_together(output, "train")
    try:
        model = XLMRobertaForMaskedLM.from_pretrained(directory, mesh=mesh, rules=rules)
        state, train_step = make_train_step(model, optax.adamw(learning_rate))
        local_rows = batch_size // processes
        rng = np.random.default_rng([seed, process])  # each process masks its own rows differently
        dropout_key = jax.random.key(seed)
        losses, started = [], time.perf_counter()
        for step in range(steps):
            texts = [lines[(step * local_rows + i) % len(lines)] for i in range(local_rows)]
            encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                                return_special_tokens_mask=True)
            ids, labels = mask_tokens(np.asarray(encoded["input_ids"]), np.asarray(encoded["special_tokens_mask"]),
                                      mask_token_id=tokenizer.mask_token_id, vocab_size=model.config.vocab_size,
                                      rng=rng)
            batch = {"input_ids": ids, "attention_mask": np.asarray(encoded["attention_mask"]), "labels": labels}
            state, loss = train_step(state, shard_batch(batch, mesh), jax.random.fold_in(dropout_key, step))
            losses.append(loss)  # a device scalar: reading it now would wait for the step to finish
            if process == 0 and (step % log_every == 0 or step == steps - 1):
                logger.info("step %d/%d  loss %.4f  (%.1f s)", step + 1, steps, _host_value(loss),
                            time.perf_counter() - started)
        save_train_state(os.path.join(staging, "train-state"), state)
        model_from_state(model, state).save_pretrained(os.path.join(staging, "model"))
        if process == 0:
            tokenizer.save_pretrained(os.path.join(staging, "model"))
        finish_together(staging, output)
    except BaseException:
        if process == 0:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return [_host_value(loss) for loss in losses]


def _check_arguments(*, steps, batch_size, max_length, log_every, learning_rate, processes) -> None:
    problems = []
    # max_length counts <s> and </s>: 2 would leave no token to train on.
    for name, value, least in (("steps", steps, 1), ("batch_size", batch_size, 1), ("log_every", log_every, 1),
                               ("max_length", max_length, 3)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            problems.append(f"{name} must be an integer >= {least}, got {value!r}")
    if not learning_rate > 0:
        problems.append(f"learning_rate must be > 0, got {learning_rate!r}")
    if not problems and batch_size % processes:
        problems.append(f"batch_size={batch_size} must be divisible by the {processes} processes")
    if problems:
        raise ValueError("; ".join(problems))


def _host_value(loss) -> float:
    return float(np.asarray(loss.addressable_data(0)))
