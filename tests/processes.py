"""Running several local processes for the multi-process tests."""

import socket
import subprocess

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_together(commands: list[list[str]], env: dict, timeout: int = 300) -> list[str]:
    """Start every command at once, wait for all; fail the test (naming the process and showing
    its output) if one fails or they do not all finish in `timeout` seconds."""
    workers = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for cmd in commands]
    outputs = []
    for worker in workers:
        try:
            outputs.append(worker.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            pytest.fail(f"the {len(commands)} processes did not finish in {timeout} s")
    for index, (worker, output) in enumerate(zip(workers, outputs, strict=True)):
        assert worker.returncode == 0, f"process {index} failed:\n{output[-3000:]}"
    return outputs
