"""The output directory of a fine-tuning run, and the rules that keep what the user had.

OUTPUT/ holds `run_config.json` (the run, for `--resume` to compare), `metrics.jsonl` (one line per
log, evaluation and the summary), `checkpoints/<step>/` (orbax, atomic) and, at the end,
`model/` (HF format with the tokenizer and label maps; built in a staging directory and renamed
into place). Unlike a conversion, the directory is live while training runs: that is what makes
`--resume` possible after a crash. So:

- a new run needs OUTPUT absent or empty; an existing run is continued only with `resume`, and
  replaced only with `overwrite`, and then only after the data, the model and the arguments have
  all been checked (a run that fails on bad input deletes nothing);
- OUTPUT may not be, hold or lie inside the model or a data file (real paths, symlinks followed).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax

from xlmr_jax.atomic_files import write_atomic, write_json_atomic
from xlmr_jax.staging import DestinationExistsError, check_destination

RUN_CONFIG = "run_config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
MODEL = "model"


def check_output(config, sources: list[str]) -> str:
    """The absolute OUTPUT path once it is known to be usable as `config` asks; nothing is changed."""
    output = check_destination(config.output, sources=sources, overwrite=True, what="output")
    occupied = os.path.isdir(output) and bool(os.listdir(output))
    if os.path.exists(output) and not os.path.isdir(output):
        raise NotADirectoryError(f"output {output} exists and is not a directory")
    _check_writable(output)
    if config.resume:
        recorded_path = os.path.join(output, RUN_CONFIG)
        if not os.path.isfile(recorded_path):
            raise FileNotFoundError(f"--resume: {output} holds no run to resume (no {RUN_CONFIG})")
        with open(recorded_path, encoding="utf-8") as fh:
            recorded = json.load(fh)
        differences = config.resume_differences(recorded)
        if differences:
            raise ValueError(f"--resume: this run differs from the one in {output}: " + "; ".join(differences))
    elif occupied and not config.overwrite:
        raise DestinationExistsError(
            f"output {output} is not empty; pass --resume to continue the run in it or --overwrite to replace it"
        )
    return output


def _check_writable(output: str) -> None:
    """OUTPUT can be made and written: the directory that will hold it (OUTPUT itself, or its
    nearest existing parent; missing ones are created) is a directory this process may write in.
    Found here, before the model loads, not after (root passes the permission test anyway)."""
    place = output
    while not os.path.exists(place) and os.path.dirname(place) != place:
        place = os.path.dirname(place)
    if not os.path.isdir(place):
        raise NotADirectoryError(f"output {output} cannot be created: {place} is not a directory")
    if not os.access(place, os.W_OK | os.X_OK):
        raise PermissionError(f"output {output} cannot be written: no permission to write in {place}")


def start(output: str, config) -> None:
    """Make OUTPUT ready for a new run (clearing an old one when `overwrite`), or keep it to resume.
    Called only after every input was checked. Process 0 writes; the others wait."""
    from jax.experimental import multihost_utils

    if jax.process_index() == 0 and not config.resume:
        if os.path.isdir(output) and os.listdir(output):
            shutil.rmtree(output)  # the user asked for it with overwrite, and every input checked out
        os.makedirs(output, exist_ok=True)
        write_json_atomic(os.path.join(output, RUN_CONFIG), config.to_json())
        write_atomic(Path(output, METRICS), b"")
    multihost_utils.sync_global_devices("xlmr_jax finetune output ready")


class MetricsLog:
    """`metrics.jsonl`, appended by process 0. On resume, lines of steps after the restored
    checkpoint are dropped first, so the log of a resumed run reads like an uninterrupted one."""

    def __init__(self, output: str, resumed_step: int | None):
        self.path = os.path.join(output, METRICS)
        self.enabled = jax.process_index() == 0
        if self.enabled and resumed_step is not None and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as fh:
                kept = [line for line in fh if line.strip() and json.loads(line).get("step", 0) <= resumed_step]
            write_atomic(Path(self.path), "".join(kept).encode("utf-8"))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
