"""Encoder forward throughput: xlmr-jax (jitted Flax NNX) vs transformers (PyTorch SDPA), same inputs.

What it measures
    One forward pass of the bare XLM-RoBERTa encoder (`XLMRobertaModel`, no pooler, no head) on
    one padded batch: `--batch` sequences of uneven lengths, right-padded with the pad id to
    `--length` positions, token ids drawn uniformly from [3, vocab). Both implementations get the
    very same ids and attention mask. Weights are random and not shared: the speed of a dense
    forward does not depend on the values, so no output difference is (or can be) reported.

    * ours: `xlmr_jax.jit_forward(model)`, as the README calls the model (the headline ratio):
      params go into the compiled function as an argument and only the output comes out. Timed
      after a separate compile (reported as `compile_s`) and warm-up calls, with
      `jax.block_until_ready`.
    * ours through a plain `nnx.jit(lambda m, ids, mask: m(ids, mask))`: the same forward, but
      flax 0.12's `nnx.jit` hands the module's state back out of the compiled function, so XLA
      copies every parameter into outputs on each call. Kept to show what `jit_forward` saves.
    * theirs: `transformers.XLMRobertaModel` with `attn_implementation="sdpa"`, `eval()`, under
      `torch.inference_mode()`; fp32 (or bf16 autocast with `--dtype bfloat16`).

    The contenders take turns (A B C A B C ...) for `--repeats` rounds so that slow phases of a
    noisy machine hit all alike; each one's median over the rounds is reported.

How to read the numbers
    * tokens/s counts non-pad tokens (the work a user asked for); positions/s counts every
      (batch x length) position, pads included (the work actually done by a dense forward).
    * The claim is the ratio ours/theirs of tokens/s (> 1: ours is faster). Absolute times depend
      on the machine and its load; on a shared CPU they are not a claim, only context.
    * `per round` gives the spread of the ratio between adjacent calls: if its range straddles
      1.0, the two are not distinguishable on this machine. `of best calls` divides the fastest
      calls: load on a shared machine only adds time, so it is a second, less noisy view.

Run:  python benchmarks/encoder_forward.py [--batch 8] [--length 128] [--repeats 5] [--warmup 2]
                                           [--dtype float32|bfloat16] [--quick]
Writes benchmarks/results/encoder_forward.{json,md} (not with --quick, a smoke check only).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

import xlmr_jax
from xlmr_jax.modeling.chunking import feed_forward_chunks

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS_STEM = "encoder_forward"
FIRST_ORDINARY_TOKEN_ID = 3  # 0..2 are <s>, <pad>, </s>: keep the random ids clear of them
SEED = 0


# -- arguments -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="sequences per batch (default 8)")
    parser.add_argument("--length", type=int, default=128, help="padded length in positions (default 128)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds, each one call per side (default 5)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed calls per side before timing (default 2)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="compute dtype of both sides (default float32)")
    parser.add_argument("--ffn-chunk-tokens", type=int, default=None,
                        help="our feed-forward block over chunks of this many tokens (XLMRobertaConfig."
                             "ffn_chunk_tokens; 0 never; default: the automatic choice)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny 2-layer model, batch 2, length 16, 2 repeats; a smoke check that writes nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.length, args.repeats, args.warmup = 2, 16, 2, 1
    if min(args.batch, args.length, args.repeats) < 1 or args.warmup < 0:
        parser.error("--batch, --length and --repeats must be >= 1 and --warmup >= 0")
    return args


def benchmark_config(quick: bool) -> xlmr_jax.XLMRobertaConfig:
    """The released xlm-roberta-base sizes; --quick shrinks it so a smoke run takes seconds."""
    config = xlmr_jax.XLMRobertaConfig.preset("base")
    if quick:
        config = config.replace(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=128)
    return config


# -- devices -------------------------------------------------------------------------------
def available_cores() -> int:
    # The affinity mask, not os.cpu_count(): a container may see more cores than it may use.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def choose_device() -> str:
    """'gpu' only when both sides can use one; otherwise both run on the CPU (a fair comparison)."""
    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return "gpu"
    # JAX may have found an accelerator that torch cannot use: keep ours on the CPU as well.
    jax.config.update("jax_default_device", jax.devices("cpu")[0])
    return "cpu"


def jax_device() -> jax.Device:
    return jax.config.jax_default_device or jax.devices()[0]


def torch_device(device: str) -> torch.device:
    return torch.device("cuda" if device == "gpu" else "cpu")


# -- inputs --------------------------------------------------------------------------------
def make_padded_batch(batch: int, length: int, vocab_size: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) of `batch` sequences of uneven lengths, right-padded with `pad_id` to `length`.

    One sequence fills the whole length so that `length` is really the padded width; the others
    take lengths between half and all of it, as a length-bucketed batch would.
    """
    rng = np.random.default_rng(SEED)
    lengths = rng.integers(max(1, length // 2), length + 1, size=batch)
    lengths[0] = length
    ids = rng.integers(FIRST_ORDINARY_TOKEN_ID, vocab_size, size=(batch, length))
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, pad_id)
    return ids.astype(np.int64), mask


# -- the forwards ---------------------------------------------------------------------------
Call = Callable[[], None]


def build_our_model(config, dtype: str) -> tuple[nnx.Module, float]:
    """Our randomly initialised model, and the seconds its construction took."""
    compute_dtype = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    started = time.perf_counter()
    # Built under jit: eager random init of the 250k x 768 embedding is slow op-by-op.
    # Parameters stay fp32 in both modes (bf16 = mixed precision, like torch autocast).
    model = nnx.jit(lambda: xlmr_jax.XLMRobertaModel(
        config, add_pooling_layer=False, dtype=compute_dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(SEED)
    ))()
    jax.block_until_ready(nnx.state(model))
    return model, time.perf_counter() - started


def our_forward(model: nnx.Module, ids: np.ndarray, mask: np.ndarray, plain_nnx_jit: bool) -> tuple[Call, dict]:
    """Our jitted forward as a no-argument call that waits for its result, and its compile times.

    plain_nnx_jit=False is `xlmr_jax.jit_forward`, the README's way. True is `nnx.jit` over the
    module, which in flax 0.12 hands the model's whole state back out of the jitted function, so
    XLA copies every parameter (the 250k x 768 embedding included) on each call.
    """
    device = jax_device()
    # int32: JAX's default integer width (x64 is off); the values are the same as torch's int64.
    input_ids = jax.device_put(jnp.asarray(ids, jnp.int32), device)
    attention_mask = jax.device_put(jnp.asarray(mask, jnp.int32), device)
    if plain_nnx_jit:
        jitted = nnx.jit(lambda m, input_ids, attention_mask: m(input_ids, attention_mask).last_hidden_state)
        args = (model, input_ids, attention_mask)
    else:
        graphdef, state = nnx.split(model)
        # the body of xlmr_jax.jit_forward, spelled out so that it can be lowered ahead of time
        jitted = jax.jit(lambda state, input_ids, attention_mask: nnx.merge(graphdef, state)(
            input_ids, attention_mask).last_hidden_state)
        args = (state, input_ids, attention_mask)

    # Compile ahead of time so the compile cost is reported on its own, not folded into a call.
    started = time.perf_counter()
    jitted.lower(*args).compile()
    compile_s = time.perf_counter() - started

    def call() -> None:
        jax.block_until_ready(jitted(*args))

    started = time.perf_counter()
    call()  # through the jit cache: timed apart in case it traces or compiles again
    first_call_s = time.perf_counter() - started
    return call, dict(compile_s=compile_s, first_call_s=first_call_s)


def build_theirs(config, dtype: str, device: str, ids: np.ndarray, mask: np.ndarray) -> tuple[Call, dict]:
    """transformers' SDPA forward as a no-argument call that waits for its result."""
    started = time.perf_counter()
    hf_config = transformers.AutoConfig.for_model(**config.to_dict())
    model = transformers.AutoModel.from_config(hf_config, attn_implementation="sdpa", add_pooling_layer=False)
    if model.config._attn_implementation != "sdpa":  # a silent fallback would change what is measured
        raise RuntimeError(f"transformers chose attention {model.config._attn_implementation!r}, not sdpa")
    target = torch_device(device)
    model = model.to(target).eval()
    init_s = time.perf_counter() - started

    input_ids = torch.from_numpy(ids).to(target)
    attention_mask = torch.from_numpy(mask).to(target)
    autocast_bf16 = dtype == "bfloat16"

    def call() -> None:
        with torch.inference_mode(), torch.autocast(target.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            model(input_ids=input_ids, attention_mask=attention_mask)
        if target.type == "cuda":
            torch.cuda.synchronize()  # CUDA calls return before the kernels finish

    return call, dict(init_s=init_s, attn_implementation=model.config._attn_implementation)


# -- timing --------------------------------------------------------------------------------
def seconds_of(call: Call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def time_interleaved(calls: dict[str, Call], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Per-call seconds of each contender, taking turns (A B C A B C ...) so noise falls on all."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(repeats):
        for name, call in calls.items():
            times[name].append(seconds_of(call))
        spent = ", ".join(f"{name} {seconds[-1]:.4f} s" for name, seconds in times.items())
        print(f"  round {round_index + 1}/{repeats}: {spent}", flush=True)
    return times


def summarise(label: str, times: list[float], tokens: int, positions: int) -> dict:
    median = statistics.median(times)
    return dict(
        label=label, seconds=times, median_s=median, min_s=min(times), max_s=max(times),
        tokens_per_s=tokens / median, positions_per_s=positions / median,
    )


def compare(ours: dict, theirs: dict) -> dict:
    """ours/theirs in tokens/s. Same inputs on both sides, so it is the inverse ratio of times."""
    return dict(
        of_medians=theirs["median_s"] / ours["median_s"],
        # Noise on a shared machine only ever adds time, so the best calls are a second view.
        of_minimums=theirs["min_s"] / ours["min_s"],
        # Calls of one round ran next to each other in time: the spread shows how much to trust.
        per_round=[t / o for o, t in zip(ours["seconds"], theirs["seconds"], strict=True)],
    )


# -- environment ---------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> dict:
    """The commit measured, and whether the checkout had uncommitted edits at the time."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return dict(commit=git("rev-parse", "HEAD"), dirty=bool(git("status", "--porcelain", "--untracked-files=no")))
    except (OSError, subprocess.CalledProcessError):
        return dict(commit=None, dirty=None)


def environment(device: str) -> dict:
    jdev = jax_device()
    return dict(
        device=device,
        jax_backend=jdev.platform,
        jax_device_kind=jdev.device_kind,
        torch_device=str(torch_device(device)),
        torch_cuda_device=torch.cuda.get_device_name() if device == "gpu" else None,
        torch_num_threads=torch.get_num_threads(),
        torch_interop_threads=torch.get_num_interop_threads(),
        available_cores=available_cores(),
        cpu=cpu_model(),
        python=platform.python_version(),
        platform=platform.platform(),
        versions=dict(jax=jax.__version__, flax=flax.__version__, torch=torch.__version__,
                      transformers=transformers.__version__, numpy=np.__version__),
        xla_flags=os.environ.get("XLA_FLAGS"),
        git=git_revision(),
    )


# -- report --------------------------------------------------------------------------------
# Contender keys, in the order they take turns. OURS is the headline: `jit_forward`, as the README uses it.
OURS, OURS_NNX_JIT, THEIRS = "ours", "ours_plain_nnx_jit", "transformers"
LABELS = {
    OURS: "xlmr-jax `jit_forward` (README usage)",
    OURS_NNX_JIT: "xlmr-jax via plain `nnx.jit` (params copied per call)",
    THEIRS: "transformers (SDPA)",
}


def exact_command(argv: list[str] | None) -> str:
    return shlex.join(["python", "benchmarks/encoder_forward.py", *(sys.argv[1:] if argv is None else argv)])


def results_table(result: dict) -> list[str]:
    rows = [
        "| | median s / forward | min s | max s | non-pad tokens/s | positions/s | ratio vs transformers |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, side in result["results"].items():
        ratio = f"{result['ratios'][name]['of_medians']:.3f}" if name in result["ratios"] else "1"
        rows.append(f"| {side['label']} | {side['median_s']:.4f} | {side['min_s']:.4f} | {side['max_s']:.4f} "
                    f"| {side['tokens_per_s']:,.0f} | {side['positions_per_s']:,.0f} | {ratio} |")
    return rows


def ratio_lines(result: dict) -> list[str]:
    lines = []
    for name, ratio in result["ratios"].items():
        low, high = min(ratio["per_round"]), max(ratio["per_round"])
        emphasis = "**" if name == OURS else ""
        lines.append(
            f"- {emphasis}{LABELS[name]} / transformers, tokens/s: {ratio['of_medians']:.3f}{emphasis} "
            f"(ratio of medians; of best calls {ratio['of_minimums']:.3f}; per round {low:.3f} to {high:.3f})"
        )
    return lines


def detail_lines(result: dict) -> list[str]:
    env, setup, cfg, inputs = result["environment"], result["setup"], result["config"], result["inputs"]
    cpu_note = (" (on the CPU: bf16 speed here says little about accelerators)"
                if env["device"] == "cpu" and result["dtype"] == "bfloat16" else "")
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    dirty = " (with uncommitted edits in the checkout)" if env["git"]["dirty"] else ""
    compiles = "; ".join(
        f"{LABELS[name]}: compile {setup[name]['compile_s']:.2f} s, first call {setup[name]['first_call_s']:.2f} s"
        for name in (OURS, OURS_NNX_JIT)
    )
    return [
        (f"- Inputs: batch {inputs['batch']}, padded length {inputs['length']}, "
         f"{inputs['non_pad_tokens']} non-pad tokens of {inputs['positions']} positions "
         f"(sequence lengths {inputs['sequence_lengths']}), right padding with id {inputs['pad_id']}, "
         f"ids uniform in [{FIRST_ORDINARY_TOKEN_ID}, vocab); the same arrays for every contender."),
        (f"- dtype: {result['dtype']}{cpu_note}; {result['repeats']} timed rounds, the contenders taking "
         f"turns in the order of the table, after {result['warmup']} warm-up calls each; median per contender."),
        (f"- Compile (lower + compile, ahead of time; reported apart from the timings): {compiles}. "
         f"Our model init (jitted) {setup['our_model_init_s']:.1f} s."),
        (f"- Model: random weights (not shared: speed does not depend on values), no pooler on either "
         f"side: {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, "
         f"{cfg['num_attention_heads']} heads, FFN {cfg['intermediate_size']}, vocab {cfg['vocab_size']}; "
         f"ours runs its feed-forward block in {result.get('ffn_chunks', 1)} chunk(s) of the sequence "
         f"(ffn_chunk_tokens={result.get('ffn_chunk_tokens')}; None: the automatic choice)."),
        (f"- Device: {env['device']} (JAX {env['jax_backend']}: {env['jax_device_kind']}; torch "
         f"{env['torch_device']}, torch.set_num_threads({env['torch_num_threads']}) = available cores "
         f"{env['available_cores']}); CPU {env['cpu']}."),
        f"- Versions: {versions}; Python {env['python']}; commit {env['git']['commit']}{dirty}.",
    ]


def markdown_report(result: dict) -> str:
    return "\n".join([
        "# Encoder forward: xlmr-jax vs transformers",
        "",
        f"Measured {result['timestamp']} by `benchmarks/encoder_forward.py`. Command:",
        "",
        "```",
        result["command"],
        "```",
        "",
        ("Ratios ours/transformers (> 1: ours is faster). The machine is shared and noisy: the ratio is "
         "the claim, the absolute times are context only."),
        "",
        *ratio_lines(result),
        "",
        *results_table(result),
        "",
        *detail_lines(result),
        "",
        "Machine-readable: `encoder_forward.json` next to this file.",
        "",
    ])


def write_results(result: dict) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{RESULTS_STEM}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS_DIR / f"{RESULTS_STEM}.md").write_text(markdown_report(result))


def print_summary(result: dict) -> None:
    for name, side in result["results"].items():
        print(f"{name:>26}: median {side['median_s']:.4f} s, {side['tokens_per_s']:,.0f} tokens/s, "
              f"{side['positions_per_s']:,.0f} positions/s")
    for name, ratio in result["ratios"].items():
        low, high = min(ratio["per_round"]), max(ratio["per_round"])
        print(f"ratio {name}/transformers (tokens/s): {ratio['of_medians']:.3f} of medians, "
              f"{ratio['of_minimums']:.3f} of best calls, per round {low:.3f} to {high:.3f}")


# -- main ----------------------------------------------------------------------------------
def build_contenders(config, args, device: str, ids: np.ndarray, mask: np.ndarray) -> tuple[dict, dict]:
    """The calls to time, keyed as in LABELS, and what their setup cost."""
    print("building ours ...", flush=True)
    model, init_s = build_our_model(config, args.dtype)
    ours, ours_setup = our_forward(model, ids, mask, plain_nnx_jit=False)
    ours_nnx, ours_nnx_setup = our_forward(model, ids, mask, plain_nnx_jit=True)
    print(f"  init {init_s:.1f} s, compile {ours_setup['compile_s']:.2f} s "
          f"(plain nnx.jit: {ours_nnx_setup['compile_s']:.2f} s)", flush=True)
    print("building transformers ...", flush=True)
    theirs, theirs_setup = build_theirs(config, args.dtype, device, ids, mask)
    calls = {OURS: ours, OURS_NNX_JIT: ours_nnx, THEIRS: theirs}
    setup = {OURS: ours_setup, OURS_NNX_JIT: ours_nnx_setup, THEIRS: theirs_setup,
             "our_model_init_s": init_s}
    return calls, setup


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cores = available_cores()
    torch.set_num_threads(cores)  # XLA's CPU pool uses every core too; match it for a fair race
    device = choose_device()
    env = environment(device)
    print(f"device: {device} (JAX {env['jax_backend']} {env['jax_device_kind']}; torch {env['torch_device']}, "
          f"torch.set_num_threads({cores}) = available cores); dtype {args.dtype}", flush=True)
    if device == "cpu" and args.dtype == "bfloat16":
        print("note: bf16 on the CPU; says little about bf16 on accelerators", flush=True)

    config = benchmark_config(args.quick).replace(ffn_chunk_tokens=args.ffn_chunk_tokens)
    ids, mask = make_padded_batch(args.batch, args.length, config.vocab_size, config.pad_token_id)
    ffn_chunks = feed_forward_chunks(args.batch, args.length, config.ffn_chunk_tokens, deterministic=True)
    print(f"our feed-forward block in {ffn_chunks} chunk(s) of the sequence "
          f"(ffn_chunk_tokens={config.ffn_chunk_tokens})", flush=True)
    tokens, positions = int(mask.sum()), mask.size
    calls, setup = build_contenders(config, args, device, ids, mask)

    print(f"timing: {args.warmup} warm-up + {args.repeats} rounds per contender, batch {args.batch} x "
          f"length {args.length} ({tokens} non-pad tokens)", flush=True)
    times = time_interleaved(calls, args.warmup, args.repeats)
    results = {name: summarise(LABELS[name], seconds, tokens, positions) for name, seconds in times.items()}
    ratios = {name: compare(results[name], results[THEIRS]) for name in (OURS, OURS_NNX_JIT)}

    result = dict(
        benchmark=RESULTS_STEM,
        timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        command=exact_command(argv),
        quick=args.quick,
        dtype=args.dtype,
        repeats=args.repeats,
        warmup=args.warmup,
        inputs=dict(batch=args.batch, length=args.length, pad_id=config.pad_token_id,
                    non_pad_tokens=tokens, positions=positions,
                    sequence_lengths=[int(n) for n in mask.sum(axis=1)], seed=SEED),
        config=config.to_dict(),
        # not in config.json: how our forward ran its feed-forward block (XLMRobertaConfig.ffn_chunk_tokens)
        ffn_chunk_tokens=config.ffn_chunk_tokens,
        ffn_chunks=ffn_chunks,
        environment=env,
        setup=setup,
        ratio=ratios[OURS]["of_medians"],  # the headline: ours as the README calls it, over transformers
        ratios=ratios,
        results=results,
    )
    print_summary(result)
    if args.quick:
        print("--quick: smoke check only, results files left untouched")
    else:
        write_results(result)
        print(f"wrote {RESULTS_DIR / RESULTS_STEM}.json and .md")
    return result


if __name__ == "__main__":
    main()
