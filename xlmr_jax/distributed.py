"""Joining a multi-process run through JAX's own runtime (`jax.distributed`).

Each process calls `initialize(...)` before touching any device; afterwards `jax.devices()` lists
every process's devices, a mesh spans them all, `from_pretrained(..., mesh=...)` makes each
process read only the slices of its own devices, and `sharding.shard_batch` builds the global
batch from each process's local rows. Values come from the arguments or, when omitted, from
the environment: XLMR_JAX_COORDINATOR (host:port of process 0), XLMR_JAX_NUM_PROCESSES,
XLMR_JAX_PROCESS_ID. On Cloud TPU VMs and SLURM clusters `initialize(auto=True)` lets JAX detect
all three itself.
"""

from __future__ import annotations

import os
import socket
import time

import jax

ENV_COORDINATOR = "XLMR_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "XLMR_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "XLMR_JAX_PROCESS_ID"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    timeout_s: int = 300,
) -> bool:
    """Join the run; returns False (and does nothing) for a single process.

    Raises a RuntimeError naming the coordinator when it cannot be reached within `timeout_s`
    seconds: a wrong address fails, it never hangs forever. On CPU, collectives go through gloo.
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if not auto and coordinator_address is None and num_processes in (None, 1):
        return False
    if not auto:
        missing = [name for name, value in (("coordinator_address", coordinator_address),
                                            ("num_processes", num_processes), ("process_id", process_id))
                   if value is None]
        if missing:
            raise ValueError(f"multi-process run: {', '.join(missing)} not given (arguments or "
                             f"{ENV_COORDINATOR} / {ENV_NUM_PROCESSES} / {ENV_PROCESS_ID})")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id={process_id} must be in [0, {num_processes})")
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS", "") == "cpu":
        # CPU devices of several processes talk through gloo (the default has no cross-process path).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not auto and process_id != 0:
        # jax aborts the whole process (no Python exception) when it cannot reach the coordinator;
        # check first, so that a wrong address gets a clear error instead.
        _wait_for_coordinator(coordinator_address, timeout_s)
    try:
        if auto:
            jax.distributed.initialize(initialization_timeout=timeout_s)
        else:
            jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                       initialization_timeout=timeout_s)
    except Exception as err:  # noqa: BLE001 - every failure here means "could not join"
        raise RuntimeError(
            f"could not join the multi-process run at coordinator {coordinator_address} as process "
            f"{process_id} of {num_processes} within {timeout_s} s: {err}"
        ) from None
    return True


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator_address={address!r}: expected host:port")
    deadline = time.monotonic() + timeout_s
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(5.0, timeout_s)):
                return
        except OSError as err:  # not up yet (process 0 may start later): retry until the deadline
            last_error = err
            time.sleep(0.25)
    raise RuntimeError(f"coordinator {address} not reachable within {timeout_s} s ({last_error}); "
                       "is process 0 running, and is the address right?")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None
