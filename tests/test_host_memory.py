"""`keep_freed_host_memory`: after it, buffers freed by worker threads are reused without being
faulted in again (what a CPU training step's buffers need); the training commands apply it."""

import os
import platform
import subprocess
import sys

PROBE = """
import resource, sys, threading
import numpy as np
if sys.argv[1] == "keep":
    from xlmr_jax.host_memory import keep_freed_host_memory
    assert keep_freed_host_memory()

def churn():  # a worker thread allocating, touching and freeing 256 MiB, as XLA's threads do
    for _ in range(4):
        block = np.ones(64 * 2**20, np.float32)
        del block

churn_thread = threading.Thread(target=churn); churn_thread.start(); churn_thread.join()  # first use
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn_thread = threading.Thread(target=churn); churn_thread.start(); churn_thread.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_of(mode: str) -> int:
    # numpy asks for huge pages on large arrays (a fault per 2 MiB); XLA's buffers fault per 4 KiB page
    env = dict(os.environ, NUMPY_MADVISE_HUGEPAGE="0")
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.strip())


def test_freed_memory_is_reused_without_page_faults():
    if platform.libc_ver()[0] != "glibc":  # no mallopt: it must say it did nothing
        from xlmr_jax.host_memory import keep_freed_host_memory

        assert keep_freed_host_memory() is False
        return
    default, kept = faults_of("default"), faults_of("keep")
    assert default > 200_000  # 4 x 256 MiB mapped afresh: 65,536 pages each
    assert kept < default / 20, (kept, default)


def test_the_training_commands_apply_it(monkeypatch):
    from xlmr_jax import cli

    monkeypatch.delenv(cli.KEEP_HOST_MEMORY)  # conftest turns it off for the suite's own process
    applied = []
    monkeypatch.setattr("xlmr_jax.host_memory.keep_freed_host_memory", lambda: applied.append(1) or True)
    assert cli.main(["finetune", "--task", "text-classification", "--model", "/nonexistent", "--train-file",
                     "/nonexistent.jsonl", "--output", "/tmp/never-made", "--mesh", "none"]) == 2
    assert applied == [1]


def test_the_variable_turns_it_off(monkeypatch):
    from xlmr_jax import cli

    monkeypatch.setenv(cli.KEEP_HOST_MEMORY, "0")
    applied = []
    monkeypatch.setattr("xlmr_jax.host_memory.keep_freed_host_memory", lambda: applied.append(1) or True)
    assert cli.main(["train-mlm", "/nonexistent", "/nonexistent.txt", "/tmp/never-made", "--mesh", "none"]) == 2
    assert applied == []
