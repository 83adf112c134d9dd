"""A staging directory shared by every process of a run (orbax and `save_pretrained` write into
it collectively), renamed into place by process 0 once all processes are done."""

from __future__ import annotations

import os
import secrets

import jax
import numpy as np
from jax.experimental import multihost_utils

from xlmr_jax.staging import open_staging, replace_directory, staging_path


def open_staging_together(output: str, prefix: str) -> tuple[str, int | None]:
    """One staging directory beside `output` for all processes: process 0 names, creates and locks
    it, the others wait for it. Returns (path, process 0's lock descriptor or None)."""
    name = f"{prefix}-{int(multihost_utils.broadcast_one_to_all(np.int32(secrets.randbits(31))))}"
    lock = open_staging(output, name)[1] if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices(f"xlmr_jax {prefix} staging ready")
    return staging_path(output, name), lock


def finish_together(staging: str, output: str) -> None:
    """Process 0 moves the complete staging directory into place; every process returns after."""
    multihost_utils.sync_global_devices("xlmr_jax staging written")
    if jax.process_index() == 0:
        os.chmod(staging, 0o755)
        replace_directory(staging, output)
    multihost_utils.sync_global_devices("xlmr_jax staging in place")
