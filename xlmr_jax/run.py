"""`xlmr-jax run`: a pipeline over inputs from stdin or a file, results as JSON lines (or `.npy`).

The reference's `transformers run --task TASK --model M` in JAX. Inputs are one per line: plain
text, or JSON objects for tasks that take several fields (question-answering, text pairs) or when
`jsonl=True` / a `.jsonl` input. Inputs are read and run in chunks, so a large file streams.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

CHUNK = 256  # inputs per pipeline call: bounded memory, a progress bar that moves
JSON_TASKS = ("question-answering",)  # whose inputs are always objects


def read_inputs(lines: Iterable[str], source: str, jsonl: bool) -> Iterator[Any]:
    """Inputs, one per non-empty line; a JSON line that does not parse names its line number."""
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n").rstrip("\r")
        if not line.strip():
            continue
        if not jsonl:
            yield line
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}, line {number}: not a JSON object ({err.msg})") from None


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def per_input(results, count: int) -> list:
    """One result per input: the reference's question answering returns a list of one input's
    answers (or one answer) as it would for a single input, not inside a list."""
    if count == 1 and not (isinstance(results, list | np.ndarray) and len(results) == 1):
        return [results]
    return results


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def run_task(task: str, model: str, *, input_path: str | None = None, output_path: str | None = None,
             tokenizer: str | None = None, jsonl: bool | None = None, dtype: str | None = None,
             mesh: str | None = None, batch_size: int = 8, progress: bool = True,
             compilation_cache: str | None = None, stdin=None, stdout=None, quantization: str | None = None,
             **task_options) -> int:
    """Run `task` on every input; returns the number of inputs. Results go to `output_path` (JSON
    lines; a `.npy` path takes embeddings as one array) or `stdout`."""
    import jax
    import jax.numpy as jnp

    from xlmr_jax.pipelines import TASKS, pipeline
    from xlmr_jax.sharding import make_mesh

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; the tasks are: {', '.join(sorted(TASKS))}")
    if input_path is not None and not os.path.isfile(input_path):
        raise FileNotFoundError(f"input file not found: {input_path}")
    to_npy = output_path is not None and output_path.endswith(".npy")
    if to_npy and task not in ("sentence-embeddings",):
        raise ValueError(f"--output {output_path}: .npy takes sentence embeddings; {task} writes JSON lines")
    if compilation_cache:  # compiled programs kept on disk: a second run starts without compiling
        jax.config.update("jax_compilation_cache_dir", compilation_cache)
    if jsonl is None:
        jsonl = task in JSON_TASKS or (input_path or "").endswith(".jsonl")
    compute_dtype = {None: None, "float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    runner = pipeline(task, model, tokenizer, dtype=compute_dtype, mesh=make_mesh(mesh) if mesh else None,
                      batch_size=batch_size, quantization=quantization, **task_options)
    source = input_path or "<stdin>"
    with contextlib.ExitStack() as stack:
        lines = stack.enter_context(open(input_path, encoding="utf-8")) if input_path else (stdin or sys.stdin)
        bar = _progress(progress and input_path is not None, input_path)
        if bar is not None:
            stack.callback(bar.close)
        results_out, embeddings = None, []
        if not to_npy:
            results_out = _output(stack, output_path, stdout)
        count = 0
        for chunk in _chunks(read_inputs(lines, source, jsonl), CHUNK):
            results = per_input(runner(chunk), len(chunk))
            if to_npy:
                embeddings.append(np.asarray(results))
            else:
                for result in results:
                    results_out.write(json.dumps(result, ensure_ascii=False, default=_json_default) + "\n")
            count += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    if to_npy:
        from xlmr_jax.atomic_files import write_atomic

        buffer = io.BytesIO()
        np.save(buffer, np.concatenate(embeddings) if embeddings else np.zeros((0, runner.config.hidden_size)))
        write_atomic(_path(output_path), buffer.getvalue())
    return count


def _path(path: str):
    from pathlib import Path

    return Path(os.path.abspath(path))


def _output(stack: contextlib.ExitStack, output_path: str | None, stdout):
    """stdout, or a file written beside its destination and renamed into place at the end (an
    interrupted run leaves any earlier file as it was)."""
    if output_path is None:
        return stdout or sys.stdout
    import tempfile

    target = _path(output_path)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    stream = stack.enter_context(os.fdopen(handle, "w", encoding="utf-8"))

    def commit(exc_type, exc, tb):
        stream.close()
        if exc_type is None:
            os.chmod(temp, 0o644)
            os.replace(temp, target)
        else:
            os.unlink(temp)
        return False

    stack.push(commit)
    return stream


def _progress(enabled: bool, input_path: str | None):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    with open(input_path, encoding="utf-8") as fh:
        total = sum(1 for line in fh if line.strip())
    return tqdm(total=total, desc="inputs", unit="input", file=sys.stderr)
