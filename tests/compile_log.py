"""The names of the programs XLA compiles inside a block, from JAX's own compile log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import jax


class _CompileLog(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.compiled: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.compiled.append(message.split(" with ")[0].removeprefix("Compiling "))


@contextlib.contextmanager
def compile_log() -> Iterator[list[str]]:
    """`with compile_log() as compiled:` -> e.g. ["jit(XLMRobertaForMaskedLM.forward)"]."""
    handler, logger = _CompileLog(), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield handler.compiled
    finally:
        logger.removeHandler(handler)
