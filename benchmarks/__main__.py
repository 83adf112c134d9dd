"""The benchmark suite, one command:

    python -m benchmarks run [--suite cpu|gpu] [--quick] [--out DIR] [--only NAME ...]

Measures the machine's fp32 and bf16 matmul rate (XLA and torch, same square shapes) at the start
and at the end of the run, then runs every benchmark of the suite, each in its own Python process
(`main(argv)` of the script, its result dict handed back as JSON), and writes
`<out>/<date>-<device>.{json,md}` (`-quick` added with --quick): one row per workload with ours,
the reference, their ratio (> 1: ours better), ours as a fraction of the measured peak where FLOPs
are counted, the configuration, the processor (lscpu's model name) and the versions. A benchmark
that fails is recorded with its error and the run goes on; the exit status is then 1.

`--quick` runs each benchmark's own `--quick` mode (tiny sizes, few repetitions): a smoke run whose
numbers say only that every path works. Default --out: benchmarks/results. The scripts still write
their own results files when run in full (not with --quick).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
CHILD, PEAK = "_child", "_peak"


# == rows ===========================================================================================
@dataclasses.dataclass
class Row:
    """One line of the table. `ratio` > 1 means ours is better (faster, or more per second)."""

    benchmark: str
    workload: str
    ours: float | None
    reference: float | None
    unit: str
    ratio: float | None
    ratio_means: str
    config: str
    fraction_of_peak: float | None = None
    note: str = ""


def _get(data: dict, *keys, default=None):
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def encoder_flops_per_position(config: dict, length: int) -> float:
    """The issue's count: 2 (4 h^2 + 2 h f) + 4 S h per position per layer (projections, FFN, QK^T, AV)."""
    h, f = config["hidden_size"], config["intermediate_size"]
    return config["num_hidden_layers"] * (2 * (4 * h * h + 2 * h * f) + 4 * length * h)


def rows_encoder_forward(name: str, result: dict, peak: dict) -> list[Row]:
    inputs, config = result["inputs"], result["config"]
    ours, theirs = result["results"]["ours"], result["results"]["transformers"]
    flops = encoder_flops_per_position(config, inputs["length"]) * inputs["positions"]
    peak_value = peak.get("bfloat16" if result["dtype"] == "bfloat16" else "float32")
    fraction = flops / ours["median_s"] / 1e9 / peak_value if peak_value else None
    shape = f"{inputs['batch']}x{inputs['length']}"
    return [Row(name, f"encoder forward {shape}", ours["tokens_per_s"], theirs["tokens_per_s"], "tokens/s",
                result["ratio"], "ours / transformers SDPA, tokens/s (medians)",
                f"{config['num_hidden_layers']} layers, hidden {config['hidden_size']}, {result['dtype']}, "
                f"batch {shape}", fraction,
                f"per round {min(result['ratios']['ours']['per_round']):.2f}-"
                f"{max(result['ratios']['ours']['per_round']):.2f}")]


def rows_convert(name: str, result: dict, peak: dict) -> list[Row]:
    summary, comparison, claim = result["summary"], result["comparison"], result["memory_claim"]
    largest = result["checkpoint"]["largest_tensor"]
    config = (f"{result['size']}{' (quick sizes)' if result['quick'] else ''}, "
              f"{result['checkpoint']['file_bytes'] / 1e6:,.0f} MB, largest tensor {largest['bytes'] / 1e6:,.0f} MB")
    rows = []
    for key, title in (("ours_to_flax", "HF -> Flax"), ("ours_to_pytorch", "Flax -> HF")):
        ratio = comparison[f"seconds_transformers_over_{key}"]
        direction = claim["directions"][key]
        rows.append(Row(name, f"convert {title}", summary[key]["operation_s"]["median"],
                        summary["transformers"]["operation_s"]["median"], "s", ratio["median"],
                        "transformers load + save / ours, seconds (median of per-round ratios)", config, None,
                        f"peak RSS {direction['above_baseline_over_largest']:.2f} x largest tensor above the "
                        f"import baseline (claim < 1.5: {'holds' if direction['holds'] else 'FAILS'})"))
    return rows


def rows_tokenizer(name: str, result: dict, peak: dict) -> list[Row]:
    return [Row(name, f"tokenizer: {row['setting']}", row["ours"] * 1e3, row["reference"] * 1e3, "ms",
                row["ratio"], "transformers / ours, seconds (medians)", f"{result['texts']} texts",
                None, f"identical ids {row['identical']}") for row in result["rows"]]


def rows_pipelines(name: str, result: dict, peak: dict) -> list[Row]:
    config = result["config"]
    shape = (f"{config['num_hidden_layers']} layers, hidden {config['hidden_size']}, {result['texts']} texts, "
             f"batch {result['batch_size']}")
    rows = []
    for task, reference in (("fill_mask", "transformers"), ("embeddings", "sentence-transformers")):
        section = result.get(task)
        if not section:
            continue
        ours, theirs = section["ours"]["warm"], section[reference]["warm"]
        rows.append(Row(name, f"pipeline {task.replace('_', '-')} (warm)", ours["texts_per_s"], theirs["texts_per_s"],
                        "texts/s", section[f"ours / {reference}"]["warm"], f"ours / {reference}, texts/s",
                        shape, _rescale(ours.get("fraction_of_peak"), result.get("peak_fp32_gflops"), peak),
                        f"cold {section[f'ours / {reference}']['cold']:.2f}"))
    return rows


def _rescale(fraction: float | None, own_peak: float | None, peak: dict) -> float | None:
    """A fraction a script computed against its own peak measurement, re-expressed against the suite's."""
    if fraction is None or not own_peak or not peak.get("float32"):
        return fraction
    return fraction * own_peak / peak["float32"]


def rows_eager(name: str, result: dict, peak: dict) -> list[Row]:
    eager, decoding = result["eager"], result["decoding"]
    rows = [Row(name, "eager model(ids, mask) vs jit_forward", eager["median_s"]["eager"] * 1e3,
                eager["median_s"]["jit_forward"] * 1e3, "ms/call", 1 / eager["ratio_eager_over_jit"],
                "jit_forward / eager, seconds per call (1: eager costs nothing more)",
                f"shipped tiny MLM, batch {eager['batch_shape']}", None,
                f"programs compiled during timed calls: {eager['compiles_during_timed_calls']}")]
    first, last = decoding["rows"][0], decoding["rows"][-1]
    rows.append(Row(name, f"greedy decode, cache {last['cache_length']} vs {first['cache_length']}",
                    last["per_token_ms"], first["per_token_ms"], "ms/token",
                    first["per_token_ms"] / last["per_token_ms"],
                    f"ms/token at cache {first['cache_length']} / at {last['cache_length']} (growth with the cache)",
                    f"decoder {decoding['config']['num_hidden_layers']} layers x {decoding['config']['hidden_size']}, "
                    f"batch {decoding['batch']}"))
    return rows


def rows_finetune(name: str, result: dict, peak: dict) -> list[Row]:
    config = result["config"]
    rows = []
    for shape, row in result["throughput"].items():
        fraction = _rescale(_get(row, "fraction_of_peak", "ours"), result.get("peak_fp32_gflops"), peak)
        rows.append(Row(name, f"train step, sequence classification {shape}", row["samples_per_s"]["ours"],
                        row["samples_per_s"]["reference"], "samples/s", row["ratio_of_best"],
                        "ours / PyTorch loop (AdamW), best steps", f"{config['num_hidden_layers']} layers, hidden "
                        f"{config['hidden_size']}, dropout {result['dropout']}", fraction,
                        f"optimizer share {row['optimizer_share']['ours']:.2f} (reference "
                        f"{row['optimizer_share']['reference']:.2f})"))
    buckets = result.get("buckets")
    if buckets:
        rows.append(Row(name, "fine-tuning epoch, length buckets vs pad to max", buckets["buckets"]["real_tokens_per_s"],
                        buckets["pad_to_max_length"]["real_tokens_per_s"], "real tokens/s",
                        buckets["ratio_real_tokens_per_s"], "buckets / padding, real tokens/s",
                        f"{buckets['corpus']['texts']} texts, batch {buckets['corpus']['batch']}"))
    return rows


def rows_compile_time(name: str, result: dict, peak: dict) -> list[Row]:
    rows = []
    for key, row in result["summary"].items():
        program, mode = key.split("/")
        rows.append(Row(name, f"compile {program.replace('_', ' ')}, 24 vs 12 layers, {mode}", row["seconds_24"],
                        row["seconds_12"], "s", row["ratio"],
                        "12-layer / 24-layer compile seconds (1: depth costs nothing; target >= 1/1.3 = 0.77)",
                        f"{'tiny widths (--quick)' if result.get('quick') else 'base widths'}, batch "
                        f"{result['batch']}x{result['length']}", None,
                        f"24/12 = {row['seconds_24_over_12']:.2f} ({'meets' if row['holds'] else 'misses'} <= 1.3)"))
    return rows


def rows_gpu(name: str, result: dict, peak: dict) -> list[Row]:
    """One row per gpu.py workload that has ours and torch contenders: best seconds, torch / ours."""
    rows = []
    for work in result.get("workloads", []):
        contenders = work.get("rows") or []
        ours = next((r for r in contenders if str(r.get("contender", r.get("side", ""))).startswith(("ours", "jax"))
                     and r.get("best_s")), None)
        theirs = next((r for r in contenders if str(r.get("contender", r.get("side", ""))).startswith(("torch",
                      "transformers")) and r.get("best_s")), None)
        if ours is None or theirs is None:
            continue
        rows.append(Row(name, f"{work['section']}: {work['name']}", ours["best_s"] * 1e3, theirs["best_s"] * 1e3, "ms",
                        theirs["best_s"] / ours["best_s"],
                        f"{theirs.get('contender', theirs.get('side'))} / {ours.get('contender', ours.get('side'))}, "
                        "best seconds", work["name"], ours.get("mfu_vs_measured")))
    return rows


def rows_quantized(name: str, result: dict, peak: dict) -> list[Row]:
    """Forward speed of each weight-only scheme against the unquantised model (our own fp32: the
    reference here is not transformers); other numbers of the script by `rows_generic`."""
    speed = result.get("speed") or {}
    modes = speed.get("modes") or {}
    rows = [Row(name, f"quantized forward {mode}", row["tokens_per_s"], modes["fp32"]["tokens_per_s"], "tokens/s",
                row["vs_fp32"], "tokens/s of the scheme / of our unquantised fp32 forward", str(speed.get("config", "")))
            for mode, row in modes.items() if mode != "fp32" and "fp32" in modes]
    return rows or rows_generic(name, result, peak)


def rows_generic(name: str, result: dict, peak: dict) -> list[Row]:
    """A benchmark the suite has no reader for: its `rows` if they carry ours/reference/ratio, else
    every number called `ratio*` in its result, by path."""
    if isinstance(result.get("rows"), list) and all(isinstance(r, dict) and "ratio" in r for r in result["rows"]):
        return [Row(name, str(r.get("workload", r.get("setting", r.get("name", i)))), r.get("ours"),
                    r.get("reference"), str(r.get("unit", "")), r["ratio"], str(r.get("ratio_means", "ours vs reference")),
                    str(r.get("config", "")), r.get("fraction_of_peak")) for i, r in enumerate(result["rows"])]
    found = []

    def walk(value, path):
        if isinstance(value, dict):
            for key, item in value.items():
                if str(key).startswith("ratio") and isinstance(item, int | float) and not isinstance(item, bool):
                    found.append(Row(name, "/".join([*path, str(key)]), None, None, "", float(item), str(key), ""))
                else:
                    walk(item, [*path, str(key)])

    walk(result, [])
    return found


# == the suite ======================================================================================
@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    module: str  # a script in benchmarks/, run as `main(argv)`
    argv: tuple[str, ...]
    quick_argv: tuple[str, ...]
    rows: Callable[[str, dict, dict], list[Row]]
    suites: tuple[str, ...] = ("cpu",)
    optional: bool = False  # included only where its script exists (written by others)


def suite_benchmarks(suite: str, out_dir: Path) -> list[Benchmark]:
    gpu_out = str(out_dir)
    every = [
        # the default 8x128 last: the script's own results file keeps its default configuration
        Benchmark("encoder_forward_32x128", "encoder_forward", ("--batch", "32", "--length", "128"), (),
                  rows_encoder_forward, ("cpu",)),
        Benchmark("encoder_forward_8x512", "encoder_forward", ("--batch", "8", "--length", "512"), (),
                  rows_encoder_forward, ("cpu",)),
        Benchmark("encoder_forward_8x128", "encoder_forward", (), ("--quick",), rows_encoder_forward, ("cpu", "gpu")),
        Benchmark("compile_time", "compile_time", (), ("--quick",), rows_compile_time, ("cpu", "gpu")),
        Benchmark("convert_checkpoint", "convert_checkpoint", (), ("--quick",), rows_convert, ("cpu",)),
        Benchmark("tokenizer_speed", "tokenizer_speed", (), ("--quick",), rows_tokenizer, ("cpu",)),
        # 300 texts, as the README's row: the script's default 1,000 on base widths took over 24
        # minutes on a 2-core machine, which a whole-suite run cannot afford
        Benchmark("pipelines", "pipelines", ("--texts", "300"), ("--quick",), rows_pipelines, ("cpu",)),
        Benchmark("eager_and_decoding", "eager_and_decoding", (), ("--quick",), rows_eager, ("cpu",)),
        Benchmark("finetune", "finetune", (), ("--quick",), rows_finetune, ("cpu", "gpu"), optional=True),
        Benchmark("quantized", "quantized", (), ("--quick",), rows_quantized, ("cpu", "gpu"), optional=True),
        Benchmark("gpu", "gpu", ("--out", gpu_out), ("--out", gpu_out, "--smoke"), rows_gpu, ("gpu",)),
    ]
    return [b for b in every if suite in b.suites and (not b.optional or (BENCHMARKS_DIR / f"{b.module}.py").exists())]


# == child processes ================================================================================
def child_env() -> dict:
    paths = [str(BENCHMARKS_DIR), str(REPO)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def run_child(args: list[str], log: Path, timeout: float | None) -> tuple[dict | None, str | None, float]:
    """Run `python -m benchmarks <args>`; its result is the JSON file it writes (the last arg)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        try:
            done = subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=REPO, env=child_env(),
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {timeout:.0f} s"
    seconds = time.perf_counter() - started
    result_file = Path(args[2] if args[0] == CHILD else args[1])
    if code == 0 and result_file.exists():
        return json.loads(result_file.read_text()), None, seconds
    tail = log.read_text(errors="replace")[-3000:]
    return None, f"exit {code}: {tail}", seconds


def child_main(module: str, result_path: str, argv: list[str]) -> int:
    sys.path.insert(0, str(BENCHMARKS_DIR))
    sys.argv = [str(BENCHMARKS_DIR / f"{module}.py"), *argv]
    result = importlib.import_module(module).main(argv)
    if not isinstance(result, dict):
        raise TypeError(f"benchmarks/{module}.py: main() returned {type(result).__name__}, expected its result dict")
    Path(result_path).write_text(json.dumps(result, default=str))
    return 0


def peak_main(result_path: str, n: int, repeats: int) -> int:
    """Square matmul rates (GFLOP/s, best of `repeats`) of XLA and torch in fp32 and bf16."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    result: dict = {"n": n, "repeats": repeats, "backend": jax.default_backend(), "jax": {}, "torch": {}}
    for dtype in ("float32", "bfloat16"):
        a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
        f = jax.jit(lambda x: x @ x)
        f(a).block_until_ready()
        best = min(_seconds(lambda f=f, a=a: f(a).block_until_ready()) for _ in range(repeats))
        result["jax"][dtype] = 2 * n**3 / best / 1e9
    try:
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for dtype in ("float32", "bfloat16"):
            t = torch.randn(n, n, device=device).to(getattr(torch, dtype))
            t @ t
            sync()
            best = min(_seconds(lambda t=t: (t @ t, sync())) for _ in range(repeats))
            result["torch"][dtype] = 2 * n**3 / best / 1e9
        result["torch_device"] = device
    except ImportError:
        pass
    Path(result_path).write_text(json.dumps(result))
    return 0


def _seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


# == machine ========================================================================================
def processor() -> str:
    """The processor's model name; one definition, in compile_time.py (a stdlib-only import)."""
    sys.path.insert(0, str(BENCHMARKS_DIR))
    from compile_time import processor as model_name

    return model_name()


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, check=False, timeout=30).stdout.strip()
        return out.splitlines()[0] if out else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def versions() -> dict:
    from importlib import metadata

    found = {}
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "transformers", "tokenizers", "sentencepiece",
                 "safetensors", "sentence-transformers", "xlmr-jax"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def git_revision() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


# == report =========================================================================================
def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def markdown(report: dict) -> str:
    machine, peak = report["machine"], report["peak"]
    lines = [f"# Benchmarks: {machine['device']}{' (quick smoke run)' if report['quick'] else ''}", "",
             f"Command: `{report['command']}`", "",
             (f"Processor: {machine['processor']}, {machine['cores']} cores available"
              f"{'; GPU ' + machine['gpu'] if machine.get('gpu') else ''}; {report['started']} to "
              f"{report['finished']}; git {report['git']['commit'][:12]}{' (dirty)' if report['git']['dirty'] else ''}."),
             "", ("Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + "."), "",
             (f"Matmul peak ({peak['n']}^3, best of the start and end measurements, XLA on {peak.get('backend')}): "
              f"fp32 **{fmt(peak['float32'])} GFLOP/s**, bf16 **{fmt(peak['bfloat16'])} GFLOP/s**"
              + (f"; torch on the same shapes: fp32 {fmt(peak['torch'].get('float32'))}, bf16 "
                 f"{fmt(peak['torch'].get('bfloat16'))} GFLOP/s" if peak.get("torch") else "") + "."), "",
             ("Ratio > 1: ours is better (see each row's meaning). Fraction of peak: ours' counted FLOPs per second "
             "over the fp32 (bf16 for bf16 runs) XLA matmul rate above."), "",
             "| benchmark | workload | ours | reference | unit | ratio | fraction of peak | config | ratio means | notes |",
             "|---|---|---:|---:|---|---:|---:|---|---|---|"]
    for row in report["rows"]:
        fraction = "" if row["fraction_of_peak"] is None else f"{row['fraction_of_peak']:.0%}"
        ratio = "**missing**" if row["ratio"] is None else f"**{row['ratio']:.2f}**"
        lines.append(f"| {row['benchmark']} | {row['workload']} | {fmt(row['ours'])} | {fmt(row['reference'])} "
                     f"| {row['unit']} | {ratio} | {fraction} | {row['config']} | {row['ratio_means']} | {row['note']} |")
    failed = {k: v for k, v in report["benchmarks"].items() if v["status"] != "ok"}
    if failed:
        lines += ["", "## Failed or skipped", ""]
        lines += [f"- `{name}`: {entry['status']}: {entry.get('error', '')[-500:]!r}" for name, entry in failed.items()]
    lines += ["", "## Runs", "", "| benchmark | command | seconds | status |", "|---|---|---:|---|"]
    for name, entry in report["benchmarks"].items():
        lines.append(f"| {name} | `{entry['command']}` | {entry['seconds']:.0f} | {entry['status']} |")
    lines += ["", ("Each benchmark runs in its own process, one after the other; within a benchmark ours and the "
                   "reference take turns, so a noisy machine slows both alike. Seconds are context; the ratios of "
                   "the same run are the claims."), ""]
    return "\n".join(lines)


def build_report(*, command: str, suite: str, quick: bool, started: str, machine: dict, peak_runs: list[dict],
                 results: dict[str, dict], benchmarks: list[Benchmark]) -> dict:
    """The report from the raw results: `results[name]` = {status, result?, error?, seconds, command}."""
    peak = {"n": peak_runs[0]["n"] if peak_runs else None, "backend": peak_runs[0].get("backend") if peak_runs else None,
            "measurements": peak_runs}
    for dtype in ("float32", "bfloat16"):
        values = [run["jax"][dtype] for run in peak_runs if dtype in run.get("jax", {})]
        peak[dtype] = max(values) if values else None
    torch_values = {dtype: [run["torch"][dtype] for run in peak_runs if dtype in run.get("torch", {})]
                    for dtype in ("float32", "bfloat16")}
    peak["torch"] = {dtype: max(v) for dtype, v in torch_values.items() if v}
    rows: list[Row] = []
    if peak["float32"] and peak["torch"].get("float32"):
        for dtype in ("float32", "bfloat16"):
            if peak.get(dtype) and peak["torch"].get(dtype):
                rows.append(Row("peak", f"matmul {peak['n']}^3 {dtype}", peak[dtype], peak["torch"][dtype], "GFLOP/s",
                                peak[dtype] / peak["torch"][dtype], "XLA / torch, GFLOP/s (best)",
                                f"{peak['n']}x{peak['n']} @ {peak['n']}x{peak['n']}", 1.0 if dtype == "float32" else None))
    by_name = {b.name: b for b in benchmarks}
    for name, entry in results.items():
        if entry["status"] != "ok":
            continue
        try:
            made = by_name[name].rows(name, entry["result"], peak)
        except Exception as error:  # noqa: BLE001 - a reader that no longer fits its script is reported, not fatal
            entry.update(status="error", error=f"reading its result: {type(error).__name__}: {error}")
            continue
        if not made:
            entry.update(status="error", error="its result gave no rows")
        rows += made
    return {"suite": suite, "quick": quick, "command": command, "started": started,
            "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine, "versions": versions(), "git": git_revision(), "peak": peak,
            "rows": [dataclasses.asdict(r) for r in rows],
            "benchmarks": {name: {k: v for k, v in entry.items() if k != "result"} for name, entry in results.items()},
            "results": {name: entry.get("result") for name, entry in results.items()}}


def run_suite(args: argparse.Namespace) -> int:
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    gpu = gpu_name() if args.suite == "gpu" else None
    machine = {"processor": processor(), "cores": len(os.sched_getaffinity(0)), "gpu": gpu,
               "device": gpu or processor(), "platform": platform.platform(), "python": platform.python_version(),
               "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
               "load_average_at_start": os.getloadavg()}
    no_gpu = "-gpu-suite-without-gpu" if args.suite == "gpu" and not gpu else ""  # not over the CPU suite's file
    stem = f"{started.strftime('%Y-%m-%d')}-{slug(machine['device'])}{no_gpu}{'-quick' if args.quick else ''}"
    benchmarks = suite_benchmarks(args.suite, out_dir)
    if args.only:
        unknown = set(args.only) - {b.name for b in benchmarks}
        if unknown:
            raise SystemExit(f"--only: not in the {args.suite} suite: {sorted(unknown)}; "
                             f"choose from {[b.name for b in benchmarks]}")
        benchmarks = [b for b in benchmarks if b.name in args.only]
    if args.quick:  # one benchmark with two full configurations needs only one quick one
        benchmarks = [b for b in benchmarks if b.quick_argv or not b.argv]
    n, repeats = (8192 if gpu else 2048, 5) if not args.quick else (1024, 3)
    peak_runs: list[dict] = []
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="xlmr-benchmarks-") as scratch:
        scratch = Path(scratch)

        def measure_peak(label: str) -> None:
            path = scratch / f"peak-{label}.json"
            found, error, _ = run_child([PEAK, str(path), str(n), str(repeats)], scratch / f"peak-{label}.log",
                                              args.timeout)
            print(f"[peak] {label}: " + (json.dumps({k: found[k] for k in ('jax', 'torch')}) if found else error),
                  flush=True)
            if found:
                peak_runs.append(found)

        measure_peak("start")
        for bench in benchmarks:
            argv = list(bench.quick_argv if args.quick else bench.argv)
            path = scratch / f"{bench.name}.json"
            command = shlex.join(["python", f"benchmarks/{bench.module}.py", *argv])
            print(f"[run ] {bench.name}: {command}", flush=True)
            found, error, seconds = run_child([CHILD, bench.module, str(path), *argv], scratch / f"{bench.name}.log",
                                              args.timeout)
            results[bench.name] = ({"status": "ok", "result": found} if found is not None
                                   else {"status": "error", "error": error})
            results[bench.name].update(seconds=seconds, command=command)
            print(f"[{'ok' if found is not None else 'FAIL'}  ] {bench.name} in {seconds:.0f} s"
                  + ("" if found is not None else f": {error[-800:]}"), flush=True)
        measure_peak("end")
    command = shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]])
    report = build_report(command=command, suite=args.suite, quick=args.quick, started=started.isoformat(
        timespec="seconds"), machine=machine, peak_runs=peak_runs, results=results, benchmarks=benchmarks)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out_dir / stem}.json and .md")
    ok = all(entry["status"] == "ok" for entry in report["benchmarks"].values()) and peak_runs
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the suite and write <out>/<date>-<device>.{json,md}")
    run.add_argument("--suite", choices=("cpu", "gpu"), default="cpu")
    run.add_argument("--quick", action="store_true", help="each benchmark's smoke mode: tiny sizes, few repetitions")
    run.add_argument("--out", default=str(RESULTS_DIR), help="folder for the report (default benchmarks/results)")
    run.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks of the suite")
    run.add_argument("--timeout", type=float, default=None, help="seconds per benchmark before it is stopped")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD]:
        return child_main(argv[1], argv[2], argv[3:])
    if argv[:1] == [PEAK]:
        return peak_main(argv[1], int(argv[2]), int(argv[3]))
    args = parse_args(argv)
    try:
        return run_suite(args)
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130


if __name__ == "__main__":
    sys.exit(main())
