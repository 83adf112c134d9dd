"""Checkpoint conversion, time and peak memory: xlmr-jax's streaming converter vs transformers' own path.

What it measures
    A synthetic HF checkpoint (`XLMRobertaForMaskedLM` at the released `--size` widths, random
    weights, `config.json` + `model.safetensors` as transformers' `save_pretrained` writes it by
    default) is converted, each operation in its own fresh Python process so that its peak memory
    is its own:

    * ours, HF -> Flax:  `xlmr_jax.convert.convert_checkpoint(src, flax_dir, to="flax")`
    * ours, Flax -> HF:  `convert_checkpoint(flax_dir, round_trip_dir, to="pytorch")`
    * transformers, the same job done the usual way: `XLMRobertaForMaskedLM.from_pretrained(src)`
      then `save_pretrained(dst)`, then an fsync of the files written (ours fsyncs too)
    * baselines: a process that only imports jax + xlmr_jax (the fixed overhead of ours), and one
      that only imports torch + transformers (the fixed overhead of theirs)

    The three conversions run in turn for `--repeats` rounds (a slow phase of the shared machine
    hits both sides alike). After round 1 the round trip (Flax -> HF output) is compared with the
    source bit for bit, tensor by tensor in row blocks read through `safetensors.safe_open`.

How peak memory is measured
    Peak RSS of an operation is the kernel's `ru_maxrss` of its child alone, from `os.wait4(pid)`
    when it exits: the whole process, start-up and imports included. RSS counts resident
    file-backed mapped pages too (transformers memory-maps safetensors; our converter reads with
    `os.pread` and maps no checkpoint), so a /proc/PID/status sampler (every 20 ms) also records
    the peak anonymous (RssAnon) and file-backed (RssFile) parts. This driver imports nothing heavy,
    since a child's ru_maxrss can never be below the driver's RSS at spawn time.

How to read the numbers
    * `operation s` is the operation alone, timed inside the child; `process s` adds interpreter
      start-up and imports. Medians over the rounds, range in brackets. Sources are in the page
      cache (just written); writes are fsynced on both sides.
    * Memory claim: peak RSS of ours < import baseline + 1.5 x the largest tensor of the checkpoint
      (the word embeddings, 250002 x hidden x 4 bytes); `peak / largest` is given too.
    * Time claim: transformers / ours operation seconds, per round (> 1: ours faster).
    * The development machine is a shared 2-core CPU: seconds are indicative only; the ratios
      against transformers in the same run are the claim.

Run:  python benchmarks/convert_checkpoint.py [--size large|base] [--repeats 3] [--workdir DIR] [--keep]
                                              [--quick]
Default run: ~2.5 minutes on the 2-core development machine; disk ~4x the checkpoint (~9 GB), removed
at the end. Writes benchmarks/results/convert_checkpoint.{json,md} (not with --quick, a smoke check).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS_STEM = "convert_checkpoint"
SCRIPT = Path(__file__).resolve()
CHILD_FLAG = "--child"
RESULT_MARKER = "@@CHILD_RESULT@@ "
SEED = 0
OVERHEAD_FACTOR = 1.5  # the claim: peak RSS < import baseline + 1.5 x largest tensor
COMPARE_BLOCK_BYTES = 64 * 1024 * 1024  # rows compared at a time in the round-trip check
SAMPLE_INTERVAL_S = 0.02
QUICK_OVERRIDES = dict(num_hidden_layers=2, vocab_size=1000, hidden_size=64, num_attention_heads=4,
                       intermediate_size=128)  # ~0.5 MB: a smoke run of every step
MB = 1e6


# == child side: each function runs in a fresh interpreter; heavy imports stay inside them ==========
def source_config(size: str, quick: bool):
    from xlmr_jax import XLMRobertaConfig

    return XLMRobertaConfig.preset(size, **(QUICK_OVERRIDES if quick else {}))


def child_write_source(directory: str, size: str, quick: bool) -> dict:
    """A random-weight HF `XLMRobertaForMaskedLM` saved by transformers with its defaults."""
    import inspect

    import torch
    import transformers

    config = source_config(size, quick)
    hf_config = transformers.AutoConfig.for_model(**config.to_dict())
    hf_config.architectures = ["XLMRobertaForMaskedLM"]
    torch.manual_seed(SEED)
    started = time.perf_counter()
    model = transformers.XLMRobertaForMaskedLM(hf_config)
    built = time.perf_counter()
    signature = inspect.signature(model.save_pretrained)
    model.save_pretrained(directory, **safe_serialization_kwargs(signature))
    return {"build_s": built - started, "save_s": time.perf_counter() - built,
            "params": sum(p.numel() for p in model.parameters()),
            "default_max_shard_size": signature.parameters["max_shard_size"].default}


def safe_serialization_kwargs(signature) -> dict:
    """transformers < 5 needs `safe_serialization=True`; 5.x always writes safetensors and has no such
    parameter (it would land unused in **kwargs)."""
    return {"safe_serialization": True} if "safe_serialization" in signature.parameters else {}


def child_baseline_jax() -> dict:
    started = time.perf_counter()
    import flax
    import jax
    import numpy
    import safetensors

    import xlmr_jax
    import xlmr_jax.convert  # what the converter imports

    return {"import_s": time.perf_counter() - started,
            "versions": {"jax": jax.__version__, "flax": flax.__version__, "numpy": numpy.__version__,
                         "safetensors": safetensors.__version__, "xlmr_jax": xlmr_jax.__version__}}


def child_baseline_torch() -> dict:
    started = time.perf_counter()
    import torch
    import transformers
    from transformers import XLMRobertaForMaskedLM  # noqa: F401 - transformers imports models lazily

    return {"import_s": time.perf_counter() - started,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}


def child_ours(source: str, destination: str, to: str, workers: int | None = None) -> dict:
    from xlmr_jax.convert import convert_checkpoint

    started = time.perf_counter()
    summary = convert_checkpoint(source, destination, to=to, workers=workers)
    seconds = time.perf_counter() - started
    return {"operation_s": seconds, "summary": summary, "xla_backend_initialised": xla_backend_initialised()}


def xla_backend_initialised() -> bool | None:
    """Whether the run started an XLA client (a private jax function; None where it is missing)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return None


def child_transformers(source: str, destination: str) -> dict:
    import inspect

    import torch
    from transformers import XLMRobertaForMaskedLM

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    started = time.perf_counter()
    model = XLMRobertaForMaskedLM.from_pretrained(source)
    loaded = time.perf_counter()
    model.save_pretrained(destination, **safe_serialization_kwargs(inspect.signature(model.save_pretrained)))
    saved = time.perf_counter()
    fsync_directory_files(destination)
    synced = time.perf_counter()
    return {"operation_s": synced - started, "load_s": loaded - started, "save_s": saved - loaded,
            "fsync_s": synced - saved, "dtype": str(model.dtype)}


def fsync_directory_files(directory: str) -> None:
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def child_verify(source: str, copy: str) -> dict:
    """Bit-for-bit comparison, tensor by tensor in row blocks; each block re-opens the files so that
    no memory map stays resident."""
    started = time.perf_counter()
    expected, got = checkpoint_tensors(source), checkpoint_tensors(copy)
    differing = []
    for key in sorted(set(expected) & set(got)):
        if not tensors_identical(expected[key], got[key], key):
            differing.append(key)
    return {"operation_s": time.perf_counter() - started, "compared": len(set(expected) & set(got)),
            "missing_in_copy": sorted(set(expected) - set(got)), "extra_in_copy": sorted(set(got) - set(expected)),
            "differing": differing,
            "bit_exact": not differing and set(expected) == set(got)}


def tensors_identical(a: dict, b: dict, key: str) -> bool:
    import numpy as np
    from safetensors import safe_open

    if (a["dtype"], a["shape"]) != (b["dtype"], b["shape"]):
        return False

    def rows(path: str, start: int, stop: int):
        with safe_open(path, framework="numpy") as fh:
            part = fh.get_slice(key)[start:min(stop, leading)] if a["shape"] else fh.get_tensor(key)
        return np.ascontiguousarray(part).reshape(-1).view(np.uint8)

    leading = a["shape"][0] if a["shape"] else 1
    row_bytes = max(a["nbytes"] // max(leading, 1), 1)
    step = max(COMPARE_BLOCK_BYTES // row_bytes, 1)
    return all(np.array_equal(rows(a["file"], s, s + step), rows(b["file"], s, s + step))
               for s in range(0, leading, step))


CHILD_OPERATIONS = {
    "write_source": child_write_source,
    "baseline_jax": child_baseline_jax,
    "baseline_torch": child_baseline_torch,
    "ours": child_ours,
    "transformers": child_transformers,
    "verify": child_verify,
}


def child_main(operation: str, kwargs_json: str) -> int:
    result = CHILD_OPERATIONS[operation](**json.loads(kwargs_json))
    import resource

    result["self_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    return 0


# == safetensors headers (stdlib only: used on both sides) ==========================================
SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                        "U8": 1, "BOOL": 1}


def read_safetensors_header(path: str) -> dict:
    with open(path, "rb") as fh:
        size = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(size))
    header.pop("__metadata__", None)
    return header


def checkpoint_tensors(directory: str) -> dict[str, dict]:
    """{key: file, dtype, shape, nbytes} over every *.safetensors file of a checkpoint directory."""
    tensors = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            path = os.path.join(directory, name)
            for key, info in read_safetensors_header(path).items():
                start, stop = info["data_offsets"]
                tensors[key] = {"file": path, "dtype": info["dtype"], "shape": list(info["shape"]),
                                "nbytes": stop - start}
    return tensors


def describe_checkpoint(directory: str) -> dict:
    tensors = checkpoint_tensors(directory)
    largest = max(tensors, key=lambda k: tensors[k]["nbytes"])
    files = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
    return {"files": files, "tensors": len(tensors), "tensor_bytes": sum(t["nbytes"] for t in tensors.values()),
            "file_bytes": sum(os.path.getsize(os.path.join(directory, f)) for f in files),
            "dtypes": sorted({t["dtype"] for t in tensors.values()}),
            "largest_tensor": {"name": largest, "shape": tensors[largest]["shape"],
                               "dtype": tensors[largest]["dtype"], "bytes": tensors[largest]["nbytes"]}}


# == driver side: spawn, measure ===================================================================
class StatusSampler(threading.Thread):
    """Peaks of VmRSS / RssAnon / RssFile from /proc/PID/status while the child runs."""

    FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.path = f"/proc/{pid}/status"
        self.peaks = {field: 0 for field in self.FIELDS}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                with open(self.path) as fh:
                    for line in fh:
                        field, _, value = line.partition(":")
                        if field in self.peaks:
                            self.peaks[field] = max(self.peaks[field], int(value.split()[0]) * 1024)
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                pass
            self.stop_event.wait(SAMPLE_INTERVAL_S)


def measure(operation: str, log_dir: Path, label: str, **kwargs) -> dict:
    """Run one child operation; its wall time, CPU time and peak RSS come from the kernel (wait4)."""
    command = [sys.executable, str(SCRIPT), CHILD_FLAG, operation, json.dumps(kwargs)]
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    stdout_path, stderr_path = log_dir / f"{label}.stdout", log_dir / f"{label}.stderr"
    load_before = os.getloadavg()[0]
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        sampler = StatusSampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        sampler.stop_event.set()
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = stderr_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{label} ({operation}) exited with {process.returncode}:\n{tail}")
    result = child_result(stdout_path.read_text())
    measured = {"operation_s": result.get("operation_s"), "process_s": wall,
                "cpu_s": usage.ru_utime + usage.ru_stime, "cpu_user_s": usage.ru_utime, "cpu_sys_s": usage.ru_stime,
                "peak_rss_bytes": usage.ru_maxrss * 1024,
                "sampled_peak_bytes": {k.lower(): v for k, v in sampler.peaks.items()},
                "load_average_1min_before": load_before, "result": result}
    print(f"  {label:28s} {wall:6.1f} s process   peak RSS {mb(measured['peak_rss_bytes']):>6s} MB", flush=True)
    return measured


def child_result(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    raise RuntimeError("child printed no result")


def run_setup(args: argparse.Namespace, run_dir: Path, logs: Path) -> dict:
    """Import baselines and the synthetic source checkpoint."""
    setup = {"baseline_jax": measure("baseline_jax", logs, "baseline_jax"),
             "baseline_torch": measure("baseline_torch", logs, "baseline_torch")}
    setup["write_source"] = measure("write_source", logs, "write_source", directory=str(run_dir / "source_hf"),
                                    size=args.size, quick=args.quick)
    return setup


def run_round(index: int, run_dir: Path, logs: Path, workers: int | None) -> tuple[dict, dict[str, Path]]:
    """One conversion each, ours and theirs in turn, to fresh destinations."""
    source = run_dir / "source_hf"
    outputs = {"flax": run_dir / f"ours_flax_{index}", "round_trip": run_dir / f"ours_round_trip_hf_{index}",
               "transformers": run_dir / f"transformers_hf_{index}"}
    measured = {
        "ours_to_flax": measure("ours", logs, f"ours_to_flax_{index}", source=str(source),
                                destination=str(outputs["flax"]), to="flax", workers=workers),
        "ours_to_pytorch": measure("ours", logs, f"ours_to_pytorch_{index}", source=str(outputs["flax"]),
                                   destination=str(outputs["round_trip"]), to="pytorch", workers=workers),
        "transformers": measure("transformers", logs, f"transformers_{index}", source=str(source),
                                destination=str(outputs["transformers"])),
    }
    return measured, outputs


def run_all(args: argparse.Namespace, run_dir: Path) -> dict:
    logs = run_dir / "logs"
    logs.mkdir()
    print("setup", flush=True)
    setup = run_setup(args, run_dir, logs)
    checkpoint = describe_checkpoint(str(run_dir / "source_hf"))
    rounds, flax_checkpoint = [], None
    for index in range(args.repeats):
        print(f"round {index + 1}/{args.repeats}", flush=True)
        measured, outputs = run_round(index, run_dir, logs, args.workers)
        if index == 0:
            flax_checkpoint = describe_checkpoint(str(outputs["flax"]))
            setup["verify_round_trip"] = measure("verify", logs, "verify_round_trip",
                                                 source=str(run_dir / "source_hf"), copy=str(outputs["round_trip"]))
        if index < args.repeats - 1:  # keep disk use to one round's outputs
            for path in outputs.values():
                shutil.rmtree(path, ignore_errors=True)
        rounds.append(measured)
    return {"checkpoint": checkpoint, "flax_checkpoint": flax_checkpoint, "setup": setup, "rounds": rounds}


# == analysis ======================================================================================
CONVERSIONS = ("ours_to_flax", "ours_to_pytorch", "transformers")


def summarise_rounds(rounds: list[dict]) -> dict:
    """Per conversion: median (and range) of the seconds over rounds, the highest peaks."""
    summary = {}
    for name in CONVERSIONS:
        runs = [r[name] for r in rounds]
        summary[name] = {
            "operation_s": spread([x["operation_s"] for x in runs]),
            "process_s": spread([x["process_s"] for x in runs]),
            "cpu_s": spread([x["cpu_s"] for x in runs]),
            "peak_rss_bytes": max(x["peak_rss_bytes"] for x in runs),
            "peak_rss_bytes_per_round": [x["peak_rss_bytes"] for x in runs],
            "sampled_peak_anon_bytes": max(x["sampled_peak_bytes"]["rssanon"] for x in runs),
            "sampled_peak_file_bytes": max(x["sampled_peak_bytes"]["rssfile"] for x in runs),
        }
    return summary


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def memory_claim(report: dict) -> dict:
    largest = report["checkpoint"]["largest_tensor"]["bytes"]
    baseline = report["setup"]["baseline_jax"]["peak_rss_bytes"]
    bound = baseline + OVERHEAD_FACTOR * largest
    directions = {}
    for name in ("ours_to_flax", "ours_to_pytorch"):
        peak = report["summary"][name]["peak_rss_bytes"]
        directions[name] = {"peak_rss_bytes": peak, "above_baseline_bytes": peak - baseline,
                            "peak_over_largest": peak / largest,
                            "above_baseline_over_largest": (peak - baseline) / largest, "holds": peak < bound}
    return {"statement": f"peak RSS of ours < import baseline (jax + xlmr_jax) + {OVERHEAD_FACTOR} x largest tensor",
            "largest_tensor_bytes": largest, "baseline_bytes": baseline, "factor": OVERHEAD_FACTOR,
            "bound_bytes": bound, "directions": directions, "holds": all(d["holds"] for d in directions.values())}


def comparison(report: dict) -> dict:
    """transformers / ours, per round (same round = same machine state) and of the medians."""
    rounds, summary, setup = report["rounds"], report["summary"], report["setup"]

    def per_round(ours_seconds) -> dict:
        return spread([r["transformers"]["operation_s"] / ours_seconds(r) for r in rounds])

    ours_peak = max(summary[k]["peak_rss_bytes"] for k in ("ours_to_flax", "ours_to_pytorch"))
    ours_anon = max(summary[k]["sampled_peak_anon_bytes"] for k in ("ours_to_flax", "ours_to_pytorch"))
    theirs = summary["transformers"]
    return {
        "seconds_transformers_over_ours_to_flax": per_round(lambda r: r["ours_to_flax"]["operation_s"]),
        "seconds_transformers_over_ours_to_pytorch": per_round(lambda r: r["ours_to_pytorch"]["operation_s"]),
        "peak_rss_transformers_over_ours": theirs["peak_rss_bytes"] / ours_peak,
        "transformers_above_own_baseline_bytes": theirs["peak_rss_bytes"] - setup["baseline_torch"]["peak_rss_bytes"],
        "sampled_anon_ours_above_own_baseline_bytes":
            ours_anon - setup["baseline_jax"]["sampled_peak_bytes"]["rssanon"],
        "sampled_anon_transformers_above_own_baseline_bytes":
            theirs["sampled_peak_anon_bytes"] - setup["baseline_torch"]["sampled_peak_bytes"]["rssanon"],
    }


def environment(workdir: Path) -> dict:
    usage = shutil.disk_usage(workdir)
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "cpus_available": len(os.sched_getaffinity(0)),
        "memory_total_bytes": meminfo_bytes("MemTotal"),
        "memory_available_bytes_at_start": meminfo_bytes("MemAvailable"),
        "load_average_at_start": list(os.getloadavg()),
        "disk": {"workdir": str(workdir), "filesystem": filesystem_of(workdir), "total_bytes": usage.total,
                 "free_bytes_at_start": usage.free},
    }


def meminfo_bytes(field: str) -> int | None:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def filesystem_of(path: Path) -> str:
    """The device and type of the mount that holds `path` (the longest matching mount point)."""
    best, found = "", "unknown"
    with open("/proc/mounts") as fh:
        for line in fh:
            device, mount, fstype = line.split()[:3]
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, found = mount, f"{device} ({fstype}) on {mount}"
    return found


def driver_peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# == report =======================================================================================
def mb(value: float) -> str:
    return f"{value / MB:,.0f}"


def seconds_text(values: dict) -> str:
    if len(values["all"]) == 1:
        return f"{values['median']:.1f}"
    return f"{values['median']:.1f} ({values['min']:.1f}-{values['max']:.1f})"


def ratio_text(values: dict) -> str:
    if len(values["all"]) == 1:
        return f"{values['median']:.2f}"
    return f"{values['median']:.2f} (per round {values['min']:.2f}-{values['max']:.2f})"


def source_paragraph(report: dict) -> str:
    ckpt, largest, flax = report["checkpoint"], report["checkpoint"]["largest_tensor"], report["flax_checkpoint"]
    written = report["setup"]["write_source"]["result"]
    quick = f" with {json.dumps(QUICK_OVERRIDES)} (--quick)" if report["quick"] else ""
    return (f"Source: random-weight `XLMRobertaForMaskedLM` at the `{report['size']}` preset widths{quick}, "
            f"{written['params']:,} parameters (the tied MLM decoder stored once), written by transformers "
            f"`save_pretrained` with its defaults (max_shard_size {written['default_max_shard_size']}): "
            f"{', '.join(ckpt['files'])} ({len(ckpt['files'])} file{'s' if len(ckpt['files']) > 1 else ''}), "
            f"{ckpt['tensors']} tensors, {mb(ckpt['file_bytes'])} MB, dtypes {', '.join(ckpt['dtypes'])}. "
            f"Largest tensor: `{largest['name']}` {largest['shape']} {largest['dtype']}, "
            f"**{mb(largest['bytes'])} MB**. Ours writes the Flax form as {', '.join(flax['files'])} "
            f"({flax['tensors']} tensors, layers stacked), with {report['workers']} worker thread(s) reading and "
            "transposing while one writes (`convert_checkpoint(workers=...)`; 0: one thread does all).")


def results_table(report: dict) -> list[str]:
    setup, summary, largest = report["setup"], report["summary"], report["checkpoint"]["largest_tensor"]["bytes"]
    base_jax, base_torch = setup["baseline_jax"]["peak_rss_bytes"], setup["baseline_torch"]["peak_rss_bytes"]
    lines = [("| operation (each its own fresh process) | operation s | process s | CPU s | peak RSS MB "
              "| peak - own import baseline MB | peak / largest tensor |"),
             "|---|---:|---:|---:|---:|---:|---:|"]
    single = [("baseline: import jax + xlmr_jax", "baseline_jax", None),
              ("baseline: import torch + transformers", "baseline_torch", None)]
    for title, key, _ in single:
        x = setup[key]
        lines.append(f"| {title} | {x['result']['import_s']:.1f} | {x['process_s']:.1f} | {x['cpu_s']:.1f} "
                     f"| {mb(x['peak_rss_bytes'])} |  | {x['peak_rss_bytes'] / largest:.2f} |")
    conversions = [("**ours: HF -> Flax** (`to=\"flax\"`)", "ours_to_flax", base_jax),
                   ("**ours: Flax -> HF** (`to=\"pytorch\"`)", "ours_to_pytorch", base_jax),
                   ("**transformers**: `from_pretrained` + `save_pretrained` + fsync", "transformers", base_torch)]
    for title, key, baseline in conversions:
        x = summary[key]
        lines.append(f"| {title} | {seconds_text(x['operation_s'])} | {seconds_text(x['process_s'])} "
                     f"| {seconds_text(x['cpu_s'])} | {mb(x['peak_rss_bytes'])} | {mb(x['peak_rss_bytes'] - baseline)} "
                     f"| {x['peak_rss_bytes'] / largest:.2f} |")
    for title, key, baseline in [("(setup) write the source with transformers", "write_source", base_torch),
                                 ("(check) round trip vs source, bit for bit", "verify_round_trip", None)]:
        x = setup[key]
        op = "" if x["operation_s"] is None else f"{x['operation_s']:.1f}"
        above = "" if baseline is None else mb(x["peak_rss_bytes"] - baseline)
        lines.append(f"| {title} | {op} | {x['process_s']:.1f} | {x['cpu_s']:.1f} | {mb(x['peak_rss_bytes'])} "
                     f"| {above} | {x['peak_rss_bytes'] / largest:.2f} |")
    return lines


def claim_lines(report: dict) -> list[str]:
    claim, cmp_, verify = report["memory_claim"], report["comparison"], report["setup"]["verify_round_trip"]["result"]
    theirs = report["summary"]["transformers"]
    directions = "; ".join(
        f"{name}: **{mb(d['peak_rss_bytes'])} MB** ({mb(d['above_baseline_bytes'])} MB above the baseline = "
        f"{d['above_baseline_over_largest']:.2f} x largest; peak / largest = {d['peak_over_largest']:.2f})"
        for name, d in claim["directions"].items())
    return [
        (f"- **Memory:** {claim['statement']}: {mb(claim['baseline_bytes'])} + {claim['factor']} x "
         f"{mb(claim['largest_tensor_bytes'])} = {mb(claim['bound_bytes'])} MB. {directions}. "
         f"**{'Holds' if claim['holds'] else 'Does not hold'}** (highest peak over all rounds)."),
        (f"- **Versus transformers, time** (operation s, transformers / ours, > 1: ours faster): "
         f"vs ours HF -> Flax {ratio_text(cmp_['seconds_transformers_over_ours_to_flax'])}; "
         f"vs ours Flax -> HF {ratio_text(cmp_['seconds_transformers_over_ours_to_pytorch'])}."),
        (f"- **Versus transformers, memory:** its peak RSS is {cmp_['peak_rss_transformers_over_ours']:.1f} x ours "
         f"({mb(cmp_['transformers_above_own_baseline_bytes'])} MB above its import baseline). Sampled, its "
         f"peak file-backed part (RssFile: mapped pages of the memory-mapped source, clean and reclaimable) "
         f"is {mb(theirs['sampled_peak_file_bytes'])} MB and its anonymous part {mb(theirs['sampled_peak_anon_bytes'])} "
         "MB. Anonymous memory above each side's import baseline (sampled RssAnon): ours "
         f"{mb(cmp_['sampled_anon_ours_above_own_baseline_bytes'])} MB, transformers "
         f"{mb(cmp_['sampled_anon_transformers_above_own_baseline_bytes'])} MB."),
        (f"- **Round trip:** {verify['compared']} tensors compared, "
         f"**{'bit-exact' if verify['bit_exact'] else 'NOT bit-exact'}** (missing {len(verify['missing_in_copy'])}, "
         f"extra {len(verify['extra_in_copy'])}, differing {len(verify['differing'])})."),
    ]


def method_lines(report: dict) -> list[str]:
    env, summary, setup = report["environment"], report["summary"], report["setup"]
    theirs = [r["transformers"]["result"] for r in report["rounds"]]
    lines = [
        (f"- Order: baselines, write source, then {len(report['rounds'])} round(s) of ours HF -> Flax, ours "
         "Flax -> HF, transformers (the round-trip check after round 1). Each operation is a fresh `python` "
         "process; each round writes to fresh directories."),
        ("- Peak RSS: the kernel's `ru_maxrss` of that one child, from `os.wait4(pid)` (whole process, "
         "imports included). RSS includes resident file-backed mapped pages; ours reads with `os.pread` "
         "and maps no checkpoint, transformers memory-maps it. Split sampled from /proc/PID/status every "
         "20 ms (highest over the rounds):"),
        "",
        "  | process | sampled peak RssAnon MB | sampled peak RssFile MB |",
        "  |---|---:|---:|",
    ]
    for key in ("baseline_jax", "baseline_torch"):
        peaks = setup[key]["sampled_peak_bytes"]
        lines.append(f"  | {key} | {mb(peaks['rssanon'])} | {mb(peaks['rssfile'])} |")
    for key in CONVERSIONS:
        lines.append(f"  | {key} | {mb(summary[key]['sampled_peak_anon_bytes'])} "
                     f"| {mb(summary[key]['sampled_peak_file_bytes'])} |")
    lines += [
        "",
        (f"- The driver imports nothing heavy (its own peak RSS: {mb(report['driver_peak_rss_bytes'])} MB): a "
         "child's `ru_maxrss` cannot be below the driver's RSS when it was spawned."),
        ("- Seconds: `operation s` is timed inside the child around the call (baselines: the imports); "
         "`process s` is spawn to exit; CPU s is user + sys of the child. Median over the rounds, range in "
         "brackets. Sources are in the page cache (just written); ours fsyncs what it writes, and the "
         "transformers row includes an fsync of its output. transformers' path writes back the same HF "
         "layout it read; ours changes the layout (stacks/unstacks layers, transposes kernels)."),
        ("- transformers split per round (load / save / fsync s): "
         + "; ".join(f"{t['load_s']:.1f} / {t['save_s']:.1f} / {t['fsync_s']:.1f}" for t in theirs)
         + f" (loaded as {theirs[0]['dtype']})."),
        (f"- Machine: {env['cpus_available']} CPU cores available ({env['cpu_count']} reported), "
         f"{mb(env['memory_total_bytes'])} MB RAM, Python {env['python']}, {env['platform']}; disk "
         f"{env['disk']['filesystem']}; load average (1 min) at start {env['load_average_at_start'][0]:.2f}, "
         f"at end {env['load_average_at_end'][0]:.2f}; {env['timestamp']}. Versions: "
         + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + "."),
        ("- This is a noisy, shared 2-core machine: the seconds are indicative only; the ratios against "
         "transformers measured in the same run (and the memory figures) are the claim."),
    ]
    return lines


def markdown_report(report: dict) -> str:
    lines = ["# Checkpoint conversion: time and peak memory", "", f"Command: `{report['command']}`", "",
             source_paragraph(report), "", *results_table(report), "", "## Claims", "", *claim_lines(report),
             "", "## How it was measured", "", *method_lines(report), ""]
    return "\n".join(lines)


def print_summary(report: dict) -> None:
    claim, summary = report["memory_claim"], report["summary"]
    for name in CONVERSIONS:
        x = summary[name]
        print(f"{name:16s} operation {seconds_text(x['operation_s']):>18s} s   "
              f"peak RSS {mb(x['peak_rss_bytes']):>6s} MB")
    print(f"largest tensor {mb(claim['largest_tensor_bytes'])} MB; bound {mb(claim['bound_bytes'])} MB; "
          f"claim holds: {claim['holds']}; round trip bit-exact: "
          f"{report['setup']['verify_round_trip']['result']['bit_exact']}")


# == entry ========================================================================================
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("large", "base"), default="large",
                        help="released widths of the synthetic checkpoint (default large: ~560M params, ~2.2 GB)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of (ours HF -> Flax, ours Flax -> HF, transformers) (default 3)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the run directory is created; needs ~4x the checkpoint size free "
                             "(default: the temp dir)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the source and the last round's outputs (default: all removed)")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads of ours (convert_checkpoint(workers=...); default: its own, the available "
                             "cores; 0: one thread)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_OVERRIDES} (~0.5 MB), 1 round; a smoke check that "
                             "prints the report and writes no results")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.repeats = "base", 1
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="xlmr-convert-bench-", dir=args.workdir))
    command = shlex.join(["python", "benchmarks/convert_checkpoint.py", *(sys.argv[1:] if argv is None else argv)])
    env = environment(run_dir)
    print(f"run directory {run_dir}", flush=True)
    try:
        run = run_all(args, run_dir)
    finally:
        if args.keep:
            print(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    env["load_average_at_end"] = list(os.getloadavg())
    setup = run["setup"]
    report = {"benchmark": RESULTS_STEM, "command": command, "size": args.size, "quick": args.quick,
              "workers": run["rounds"][0]["ours_to_flax"]["result"]["summary"].get("workers"),
              "repeats": args.repeats, "environment": env,
              "versions": {**setup["baseline_jax"]["result"]["versions"],
                           **setup["baseline_torch"]["result"]["versions"]},
              "driver_peak_rss_bytes": driver_peak_rss_bytes(),
              "peak_rss_method": ("ru_maxrss of each child from os.wait4(pid); /proc/PID/status sampled every "
                                  "20 ms for the anon/file split"),
              **run, "summary": summarise_rounds(run["rounds"])}
    report["memory_claim"] = memory_claim(report)
    report["comparison"] = comparison(report)
    print_summary(report)
    if args.quick:
        print(markdown_report(report))
        print("--quick: results not written (the report above is what a full run writes)")
        return report
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{RESULTS_STEM}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (RESULTS_DIR / f"{RESULTS_STEM}.md").write_text(markdown_report(report))
    print(f"wrote {RESULTS_DIR / RESULTS_STEM}.{{json,md}}")
    return report


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == CHILD_FLAG:
        sys.exit(child_main(sys.argv[2], sys.argv[3]))
    main()
