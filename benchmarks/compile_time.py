"""Compile time vs depth: 12 and 24 layers, cold and from JAX's persistent compilation cache.

What it measures
    The jitted encoder forward (`XLMRobertaModel`, base widths: hidden 768, 12 heads, FFN 3072,
    vocabulary 250,002; batch 8 x 128) and a training step (forward + backward of a mean-square
    loss + optax AdamW update), lowered and compiled from abstract parameters (`nnx.eval_shape`:
    nothing is initialised), at 12 and 24 layers. The layers are stacked and run under a scan,
    so the program (and its compile time) should not grow with depth.
    Each measurement is a fresh Python process (nothing is cached in memory):
      * cold: an empty persistent cache directory (the compile writes its entry there);
      * cached: a second process on the same directory (the entry is read back).
    The two depths take turns for `--repeats` rounds; medians are reported.

How to read the numbers
    The claim: 24-layer compile seconds / 12-layer compile seconds <= 1.3, cold and cached.
    `ratio` = 12-layer / 24-layer seconds (1.0: equal; >= 0.77 meets the claim). On the shared
    2-core development machine the seconds are context; the ratio of the same run is the claim.

Run:  python benchmarks/compile_time.py [--repeats 2] [--quick] [--no-write]
Writes benchmarks/results/compile_time.{json,md} (not with --quick: tiny widths, 1 round).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS_STEM = "compile_time"
SCRIPT = Path(__file__).resolve()
RESULT_MARKER = "@@COMPILE_TIME@@ "
DEPTHS = (12, 24)
TARGET = 1.3  # 24-layer seconds <= 1.3 x 12-layer seconds
QUICK_WIDTHS = dict(vocab_size=1000, hidden_size=64, num_attention_heads=4, intermediate_size=128)
BATCH, LENGTH = 8, 128


# == child: one fresh process compiles both programs ===============================================
def child(depths: list[int], programs: list[str], quick: bool, cache_dir: str) -> dict:
    started = time.perf_counter()
    import jax

    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

    out = {"import_s": time.perf_counter() - started, "backend": jax.default_backend()}
    for layers in depths:
        out[str(layers)] = compile_programs(layers, programs, quick)
    out["cache_entries"] = len(os.listdir(cache_dir))
    return out


def compile_programs(layers: int, programs: list[str], quick: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import xlmr_jax

    config = xlmr_jax.XLMRobertaConfig.preset("base", num_hidden_layers=layers, **(QUICK_WIDTHS if quick else {}))
    abstract = nnx.eval_shape(lambda: xlmr_jax.XLMRobertaModel(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    ids = jax.ShapeDtypeStruct((BATCH, LENGTH), jnp.int32)
    mask = jax.ShapeDtypeStruct((BATCH, LENGTH), jnp.int32)

    def forward(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, mask).last_hidden_state

    optimizer = optax.adamw(2e-5, weight_decay=0.01)

    def train_step(state, opt_state, ids, mask):
        def loss(state):
            return jnp.mean(jnp.square(forward(state, ids, mask)))

        value, grads = jax.value_and_grad(loss)(state)
        updates, opt_state = optimizer.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, value

    opt_state = jax.eval_shape(optimizer.init, state)
    out = {}
    for name, fn, args in (("forward", jax.jit(forward), (state, ids, mask)),
                           ("train_step", jax.jit(train_step, donate_argnums=(0, 1)), (state, opt_state, ids, mask))):
        if name not in programs:
            continue
        t0 = time.perf_counter()
        lowered = fn.lower(*args)
        t1 = time.perf_counter()
        lowered.compile()
        t2 = time.perf_counter()
        out[name] = {"lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0}
    return out


# == driver ========================================================================================
def run_child(depths: list[int], programs: list[str], quick: bool, cache_dir: str) -> dict:
    command = [sys.executable, str(SCRIPT), "--child", json.dumps([depths, programs, quick, cache_dir])]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"compile_time child ({depths} layers) exited {done.returncode}:\n{done.stderr[-3000:]}")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    raise RuntimeError("compile_time child printed no result")


def measure(repeats: int, quick: bool, programs: list[str]) -> list[dict]:
    """Full: one process per (depth, cold/cached). Quick: one process compiles both depths (a tiny
    2-layer program first, so neither pays the first compile of the process), one reads them back."""
    rounds = []
    for index in range(repeats):
        entry = {}
        order = list(DEPTHS if index % 2 == 0 else DEPTHS[::-1])  # alternate who goes first
        groups = [[2, *order]] if quick else [[layers] for layers in order]
        for depths in groups:
            with tempfile.TemporaryDirectory(prefix="xlmr-compile-cache-") as cache_dir:
                cold = run_child(depths, programs, quick, cache_dir)
                cached = run_child(depths, programs, quick, cache_dir)
            for layers in depths:
                if layers in DEPTHS:
                    entry[str(layers)] = {"cold": cold[str(layers)], "cached": cached[str(layers)],
                                          "backend": cold["backend"]}
                    print(f"  round {index + 1}: {layers} layers: "
                          + "; ".join(f"{p} cold {cold[str(layers)][p]['total_s']:.2f} s, cached "
                                      f"{cached[str(layers)][p]['total_s']:.2f} s" for p in programs), flush=True)
        rounds.append(entry)
    return rounds


def summarise(rounds: list[dict], programs: list[str]) -> dict:
    summary = {}
    for program in programs:
        for mode in ("cold", "cached"):
            seconds = {layers: [r[str(layers)][mode][program]["total_s"] for r in rounds] for layers in DEPTHS}
            medians = {layers: statistics.median(v) for layers, v in seconds.items()}
            per_round = [a / b for a, b in zip(seconds[24], seconds[12], strict=True)]
            summary[f"{program}/{mode}"] = {
                "seconds_12": medians[12], "seconds_24": medians[24],
                "seconds_24_over_12": medians[24] / medians[12],
                "seconds_24_over_12_per_round": per_round,
                "ratio": medians[12] / medians[24], "holds": medians[24] / medians[12] <= TARGET,
            }
    return summary


def markdown_report(result: dict) -> str:
    lines = ["# Compile time: 12 vs 24 layers", "", f"Command: `{result['command']}`", "",
             (f"{result['widths']}; batch {BATCH} x {LENGTH}; {result['repeats']} round(s), medians; each "
              "measurement a fresh process; `cached` = a second process reading the persistent compilation "
              f"cache the first one wrote. Backend {result['backend']}; {result['processor']}; "
              f"{result['timestamp']}."), "",
             "| program | cache | 12 layers s | 24 layers s | 24 / 12 (per round) | <= 1.3 |",
             "|---|---|---:|---:|---:|---|"]
    for key, row in result["summary"].items():
        program, mode = key.split("/")
        per_round = ", ".join(f"{x:.2f}" for x in row["seconds_24_over_12_per_round"])
        lines.append(f"| {program} | {mode} | {row['seconds_12']:.2f} | {row['seconds_24']:.2f} "
                     f"| **{row['seconds_24_over_12']:.2f}** ({per_round}) | {'yes' if row['holds'] else 'NO'} |")
    lines += ["", ("Seconds are `lower` + `compile` of `jax.jit` from abstract parameters (tracing included); "
              "the shared 2-core machine makes them indicative, the ratio of the same run is the claim."), ""]
    return "\n".join(lines)


def processor() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (12 layers, 24 layers) (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help=f"widths {QUICK_WIDTHS}, forward only, both depths in one process, 1 round: "
                             "a smoke check that writes nothing")
    parser.add_argument("--no-write", action="store_true", help="print, write no results files")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    programs = ["forward"] if args.quick else ["forward", "train_step"]
    rounds = measure(args.repeats, args.quick, programs)
    widths = (f"widths {QUICK_WIDTHS} (--quick)" if args.quick
              else "base widths (hidden 768, 12 heads, FFN 3072, vocabulary 250,002)")
    result = {"benchmark": RESULTS_STEM,
              "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "command": shlex.join(["python", "benchmarks/compile_time.py",
                                     *(sys.argv[1:] if argv is None else argv)]),
              "quick": args.quick, "repeats": args.repeats, "widths": widths, "batch": BATCH, "length": LENGTH,
              "backend": rounds[0]["12"]["backend"], "processor": processor(), "target": TARGET,
              "programs": programs, "rounds": rounds, "summary": summarise(rounds, programs), "wall_s": time.perf_counter() - started}
    report = markdown_report(result)
    print(report)
    if not (args.quick or args.no_write):
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"{RESULTS_STEM}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS_DIR / f"{RESULTS_STEM}.md").write_text(report)
        print(f"wrote {RESULTS_DIR / RESULTS_STEM}.json and .md")
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(RESULT_MARKER + json.dumps(child(*json.loads(sys.argv[2]))), flush=True)
        sys.exit(0)
    main()
