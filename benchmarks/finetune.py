"""Fine-tuning speed: xlmr-jax's train step vs a PyTorch training loop over transformers, one run.

What it measures
    1. Training samples/s of sequence classification (2 labels) at the xlm-roberta-base sizes
       (12 layers, hidden 768, FFN 3072, 12 heads, vocabulary 250,002), fp32, at batch 8 x 128 and
       32 x 128 (`--batches`, `--length`); every row is `--length` real tokens, the same ids and
       labels on both sides. The two take turns, one step each per round; best of the rounds.
       * ours: `make_optimizer` + `make_train_step(model, optimizer, with_grad_norm=True)` exactly
         as `finetune` builds them (one device, no mesh; fp32 compute and parameters; the layers
         unrolled, finetune's default, or scanned with `--no-unroll-layers`), the batch placed with
         `jnp.asarray` and the dropout key folded from the step, as `finetune` does.
       * reference: `transformers.XLMRobertaForSequenceClassification` with
         `attn_implementation="sdpa"` in `train()` mode; `torch.optim.AdamW` with the Trainer's two
         parameter groups (`Trainer.get_decay_parameter_names`) and the Trainer's default
         `optim="adamw_torch_fused"` (`fused=True`), `clip_grad_norm_`,
         `get_linear_schedule_with_warmup`, `zero_grad()`; `torch.set_num_threads(cores)`.
       Both: lr 2e-5, weight decay 0.01, betas (0.9, 0.999), eps 1e-8, max grad norm 1.0, linear
       schedule with 10% warmup over 1000 steps; dropout `--dropout` (default 0.1, the released
       checkpoints' and so `finetune`'s default) on both sides.
    2. Each step's counted FLOPs as a fraction of the machine's fp32 matmul rate (XLA, 2048^3, best
       of 5, measured in the run). Counted: the encoder's matmuls, per position per layer
       2 (4 h^2 + 2 h f) + 4 S h for the forward (projections, FFN, QK^T and AV), times 3 for
       forward + backward, plus the classifier head (2 (h^2 + 2 h) per row, times 3). Not counted:
       embeddings, LayerNorms, softmax, GELU, the loss, the optimizer.
    3. The optimizer's share of a step. Reference: the seconds of `clip_grad_norm_` + `step()` +
       scheduler + `zero_grad()` inside each timed step. Ours (one fused XLA program, so it cannot be
       cut apart): the same gradient norm + clip + AdamW update + apply, jitted on its own with
       donation over a fixed gradient tree, timed in the rounds of the first batch size (its cost
       does not depend on the batch), over the step's time. About 69% of the parameters are the
       250,002 x 768 word embedding, whose dense AdamW update is part of every step on both sides.
    4. Length buckets vs padding to the longest: one epoch of a skewed corpus (lengths log-normal,
       median ~20 tokens, clipped to [4, 128]) through our `BatchIterator` as `finetune` builds it
       (shuffled, drop_remainder=True), with buckets (32, 64, 128) vs `buckets=None` (every batch
       padded to 128), same model and train step. Real (non-pad) tokens/s of each epoch; the two
       epochs take turns step by step (a step timed from asking the iterator for its batch to its
       results being ready); the programs for each width are compiled (and timed) before.

How to read the numbers
    The claim is the ratio ours/reference measured in the same run (> 1: ours is faster). On the
    shared 2-core development machine absolute seconds are context, never a claim; the ratio of the
    best steps (noise only adds time) is the headline, the per-round range shows the spread. The
    process's CPU seconds per step (user + system, from getrusage) are a second view that other
    processes' load moves much less than wall time.

Run:  python benchmarks/finetune.py [--batches 8 32] [--length 128] [--repeats 3] [--dropout 0.1]
                                    [--corpus 96] [--bucket-batch 8] [--bucket-repeats 1]
                                    [--no-unroll-layers] [--quick]
Writes benchmarks/results/finetune.{json,md} (not with --quick: tiny sizes, a smoke check of every
code path that writes nothing).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import resource
import shlex
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import transformers
from encoder_forward import available_cores, choose_device, environment, torch_device
from flax import nnx
from pipelines import matmul_peak_gflops

import xlmr_jax
from xlmr_jax.finetune.batches import BatchIterator
from xlmr_jax.finetune.config import FinetuneConfig
from xlmr_jax.training.optim import make_optimizer
from xlmr_jax.training.steps import make_train_step

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS_STEM = "finetune"
FIRST_ORDINARY_TOKEN_ID = 3  # 0..2 are <s>, <pad>, </s>
BOS, PAD, EOS = 0, 1, 2
SEED = 0
NUM_LABELS = 2
# The optimisation, the same on both sides (the schedule's values do not change the cost of a step).
LEARNING_RATE, WEIGHT_DECAY, MAX_GRAD_NORM, BETAS, EPS = 2e-5, 0.01, 1.0, (0.9, 0.999), 1e-8
SCHEDULE_STEPS, WARMUP_RATIO = 1000, 0.1


# -- arguments -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32], help="batch sizes (default 8 32)")
    parser.add_argument("--length", type=int, default=128, help="tokens per row (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per batch size (default 3)")
    parser.add_argument("--dropout", type=float, default=0.1, help="dropout of both sides (default 0.1; 0: off)")
    parser.add_argument("--corpus", type=int, default=96, help="texts in the skewed corpus (default 96)")
    parser.add_argument("--bucket-batch", type=int, default=8, help="batch size of the bucket epochs (default 8)")
    parser.add_argument("--bucket-repeats", type=int, default=1, help="epochs per contender, best kept (default 1)")
    # The default is finetune's own (FinetuneConfig.unroll_layers): "as finetune builds them".
    parser.add_argument("--no-unroll-layers", dest="unroll_layers", action="store_false",
                        default=FinetuneConfig.unroll_layers,
                        help="ours with the layers in a scan loop (finetune's --no-unroll-layers; default: "
                             "finetune's setting)")
    parser.add_argument("--quick", action="store_true",
                        help="2 layers, hidden 64, vocab 1000, length 32, few steps; writes nothing")
    args = parser.parse_args(argv)
    if args.quick:
        # One batch size, and the bucket epochs at the same batch: every compile is one of a code path.
        args.batches, args.length, args.repeats, args.corpus, args.bucket_batch = [4], 32, 2, 48, 4
    if min(*args.batches, args.length, args.repeats, args.corpus, args.bucket_batch, args.bucket_repeats) < 1:
        parser.error("sizes and repeats must be >= 1")
    if not 0.0 <= args.dropout < 1.0:
        parser.error("--dropout must be in [0, 1)")
    return args


def benchmark_config(args) -> xlmr_jax.XLMRobertaConfig:
    """xlm-roberta-base with a 2-label head; --quick shrinks it to seconds."""
    config = xlmr_jax.XLMRobertaConfig.preset("base").replace(
        num_labels=NUM_LABELS, hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout,
        unroll_layers=args.unroll_layers)
    if args.quick:
        config = config.replace(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128)
    return config


def bucket_widths(length: int) -> tuple[int, ...]:
    """(32, 64, 128) for 128: quarter, half and full length."""
    return (length // 4, length // 2, length)


# -- inputs --------------------------------------------------------------------------------------
def rows_of_lengths(lengths: np.ndarray, width: int, vocab_size: int, rng) -> dict[str, np.ndarray]:
    """input_ids (<s> random ids </s>, right-padded), attention_mask and a label per row, int32."""
    count = len(lengths)
    ids = rng.integers(FIRST_ORDINARY_TOKEN_ID, vocab_size, size=(count, width))
    positions = np.arange(width)[None, :]
    ids[:, 0] = BOS
    ids = np.where(positions == lengths[:, None] - 1, EOS, ids)
    mask = positions < lengths[:, None]
    return {"input_ids": np.where(mask, ids, PAD).astype(np.int32), "attention_mask": mask.astype(np.int32),
            "labels": rng.integers(0, NUM_LABELS, size=count).astype(np.int32)}


def skewed_lengths(count: int, width: int, rng) -> np.ndarray:
    """Most texts short, a few long: log-normal around width/6 (~20 of 128), clipped to [4, width]."""
    return np.clip(np.round(rng.lognormal(np.log(width / 6), 0.9, size=count)), 4, width).astype(np.int64)


# -- ours ----------------------------------------------------------------------------------------
class Ours:
    """Our model, optimizer and train step, built as `finetune` builds them (one device)."""

    def __init__(self, config, dropout: float):
        started = time.perf_counter()
        # Built under jit: eager random init of the 250k x 768 embedding is slow op by op.
        model = nnx.jit(lambda: xlmr_jax.XLMRobertaForSequenceClassification(
            config, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(SEED)))()
        self.optimizer = make_optimizer(
            nnx.state(model, nnx.Param), learning_rate=LEARNING_RATE, total_steps=SCHEDULE_STEPS,
            warmup_ratio=WARMUP_RATIO, schedule="linear", weight_decay=WEIGHT_DECAY, adam_b1=BETAS[0],
            adam_b2=BETAS[1], adam_eps=EPS, max_grad_norm=MAX_GRAD_NORM)
        self.state, self.train_step = make_train_step(model, self.optimizer, with_grad_norm=True)
        jax.block_until_ready(self.state)
        self.init_s = time.perf_counter() - started
        self.num_params = sum(x.size for x in jax.tree.leaves(self.state.params))
        self.dropout_key = jax.random.key(SEED) if dropout > 0 else None
        self.micro_step = 0
        self._update_only, self._grads = None, None

    def dispatch(self, batch: dict[str, np.ndarray]):
        """One step as the loop makes it; returns (loss, grad_norm) without waiting for them."""
        rng = None if self.dropout_key is None else jax.random.fold_in(self.dropout_key, self.micro_step)
        self.micro_step += 1
        self.state, out = self.train_step(self.state, jax.tree.map(jnp.asarray, batch), rng)
        return out

    def step(self, batch: dict[str, np.ndarray]) -> None:
        jax.block_until_ready((self.dispatch(batch), self.state))

    def optimizer_update(self) -> None:
        """The optimizer part of the step on its own: the gradient norm, clip + AdamW + apply, on the
        real state (donated) with a fixed gradient tree."""
        if self._update_only is None:
            optimizer = self.optimizer

            @functools.partial(jax.jit, donate_argnums=(0, 1))
            def update_only(params, opt_state, grads):
                updates, opt_state = optimizer.update(grads, opt_state, params)
                return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)

            self._grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-4), self.state.params)
            self._update_only = update_only
        params, opt_state, norm = self._update_only(self.state.params, self.state.opt_state, self._grads)
        self.state = self.state.replace(params=params, opt_state=opt_state)
        jax.block_until_ready((params, opt_state, norm))

    def free_optimizer_only(self) -> None:
        self._update_only, self._grads = None, None


# -- the reference -------------------------------------------------------------------------------
class Reference:
    """transformers' model in train() mode with the Trainer's optimizer, scheduler and clipping."""

    def __init__(self, config, device: str):
        started = time.perf_counter()
        hf_config = transformers.AutoConfig.for_model(**config.to_dict())
        torch.manual_seed(SEED)
        model = transformers.AutoModelForSequenceClassification.from_config(hf_config, attn_implementation="sdpa")
        if model.config._attn_implementation != "sdpa":  # a silent fallback would change what is measured
            raise RuntimeError(f"transformers chose attention {model.config._attn_implementation!r}, not sdpa")
        self.device = torch_device(device)
        self.model = model.to(self.device).train()
        # The Trainer's own grouping (its method reads nothing from the Trainer), then its create_optimizer.
        decayed = set(transformers.Trainer.get_decay_parameter_names(None, self.model))
        named = list(self.model.named_parameters())
        groups = [{"params": [p for n, p in named if n in decayed], "weight_decay": WEIGHT_DECAY},
                  {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=BETAS, eps=EPS, fused=True)
        self.scheduler = transformers.get_linear_schedule_with_warmup(
            self.optimizer, int(SCHEDULE_STEPS * WARMUP_RATIO), SCHEDULE_STEPS)
        self.init_s = time.perf_counter() - started
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.decay_groups = [len(g["params"]) for g in groups]
        self.optimizer_seconds: list[float] = []  # of each step, in order

    def step(self, batch: dict[str, np.ndarray]) -> None:
        inputs = {k: torch.from_numpy(v.astype(np.int64)).to(self.device) for k, v in batch.items()}
        loss = self.model(**inputs).loss
        loss.backward()
        self._sync()
        started = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self._sync()
        self.optimizer_seconds.append(time.perf_counter() - started)
        loss.item()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


# -- counting ------------------------------------------------------------------------------------
def train_flops_per_row(config, length: int) -> float:
    """Matmul FLOPs of one training step per row of `length` positions (see the module docstring)."""
    h, f = config.hidden_size, config.intermediate_size
    per_position = 2 * (4 * h * h + 2 * h * f) + 4 * length * h
    head = 2 * (h * h + h * config.num_labels)
    return 3 * (config.num_hidden_layers * length * per_position + head)


def seconds_of(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def usage_of(call) -> dict[str, float]:
    """Wall seconds of `call`, and the process's CPU seconds (user + system), system seconds and
    minor page faults during it. CPU time counts only this process's work, so other processes'
    load moves it much less than the wall time."""
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    call()
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    system = after.ru_stime - before.ru_stime
    return dict(wall=wall, cpu=after.ru_utime - before.ru_utime + system, system=system,
                page_faults=after.ru_minflt - before.ru_minflt)


# -- workload 1: samples/s -----------------------------------------------------------------------
def throughput(ours: Ours, theirs: Reference, config, args, measure_peak) -> dict:
    """Per batch size: rounds of one step each, taking turns. The optimizer alone is timed in the
    rounds of the first batch size (its cost does not depend on the batch), then its fixed
    gradient tree is freed before the larger batches need the memory."""
    results, optimizer_only = {}, []
    for batch_size in args.batches:
        rng = np.random.default_rng((SEED, batch_size))
        batch = rows_of_lengths(np.full(batch_size, args.length), args.length, config.vocab_size, rng)
        print(f"batch {batch_size} x {args.length}: first steps ...", flush=True)
        ours_step, reference_step = functools.partial(ours.step, batch), functools.partial(theirs.step, batch)
        first = {"ours_compile_and_step_s": seconds_of(ours_step)}
        if not results:
            # The first reference step allocates AdamW's state, the first optimizer-only call compiles:
            # one more untimed step each. Later batch sizes only compile our step (above).
            first["reference_first_step_s"] = seconds_of(reference_step)
            ours.optimizer_update()
            ours_step()
            reference_step()
        seconds = {"ours": [], "reference": []}
        usage = {"ours": [], "reference": []}
        reference_optimizer = []
        for round_index in range(args.repeats):
            for side, call in (("ours", ours_step), ("reference", reference_step)):
                usage[side].append(usage_of(call))
                seconds[side].append(usage[side][-1]["wall"])
            reference_optimizer.append(theirs.optimizer_seconds[-1])
            if not results:
                optimizer_only.append(seconds_of(ours.optimizer_update))
            print(f"  round {round_index + 1}/{args.repeats}: ours {seconds['ours'][-1]:.3f} s (CPU "
                  f"{usage['ours'][-1]['cpu']:.1f} s), reference {seconds['reference'][-1]:.3f} s (CPU "
                  f"{usage['reference'][-1]['cpu']:.1f} s; its optimizer {reference_optimizer[-1]:.3f} s)"
                  + (f", ours optimizer alone {optimizer_only[-1]:.3f} s" if not results else ""), flush=True)
        ours.free_optimizer_only()
        flops = batch_size * train_flops_per_row(config, args.length)
        best = {name: min(values) for name, values in seconds.items()}
        results[f"{batch_size}x{args.length}"] = dict(
            batch=batch_size, length=args.length, seconds=seconds, best_s=best, first=first,
            samples_per_s={side: batch_size / best[side] for side in ("ours", "reference")},
            ratio_of_best=best["reference"] / best["ours"],
            ratio_of_medians=float(np.median(seconds["reference"]) / np.median(seconds["ours"])),
            ratio_per_round=[t / o for o, t in zip(seconds["ours"], seconds["reference"], strict=True)],
            usage=usage,
            cpu_s_best={side: min(u["cpu"] for u in usage[side]) for side in usage},
            counted_gflop_per_step=flops / 1e9,
            gflop_per_s={side: flops / best[side] / 1e9 for side in ("ours", "reference")},
            optimizer_share=dict(
                ours=min(optimizer_only) / best["ours"],
                ours_optimizer_only_best_s=min(optimizer_only),
                ours_optimizer_only_s=optimizer_only,
                reference=min(reference_optimizer) / best["reference"],
                reference_optimizer_best_s=min(reference_optimizer),
                reference_optimizer_s=reference_optimizer,
            ),
        )
        measure_peak()  # between workloads: the best of all measurements is the machine's rate
        row = results[f"{batch_size}x{args.length}"]
        # getrusage counts in clock ticks: a --quick step can read 0 s
        row["ratio_of_cpu_s"] = row["cpu_s_best"]["reference"] / max(row["cpu_s_best"]["ours"], 1e-3)
        print(f"  samples/s ours {row['samples_per_s']['ours']:.2f}, reference "
              f"{row['samples_per_s']['reference']:.2f}: ratio {row['ratio_of_best']:.3f} (of CPU seconds "
              f"{row['ratio_of_cpu_s']:.3f})", flush=True)
    return results


# -- workload 2: buckets vs pad to the longest ----------------------------------------------------
def buckets_vs_padding(ours: Ours, config, args) -> dict:
    rng = np.random.default_rng((SEED, 2))
    lengths = skewed_lengths(args.corpus, args.length, rng)
    arrays = rows_of_lengths(lengths, args.length, config.vocab_size, rng)
    widths = bucket_widths(args.length)
    contenders = {"buckets": widths, "pad_to_max_length": None}

    def iterator(buckets):
        # As finetune's setup builds the training iterator (one epoch here).
        return BatchIterator(arrays, lengths, sequence_keys=("input_ids", "attention_mask"),
                             pad_values={"input_ids": PAD, "attention_mask": 0},
                             global_batch_size=args.bucket_batch, buckets=buckets, shuffle=True, seed=SEED,
                             num_epochs=1, drop_remainder=True)

    # Warm: one step per width the epochs will use, so that they time steps, not compiles.
    compile_s = {}
    for buckets in contenders.values():
        for width in sorted({batch["input_ids"].shape[1] for batch in iterator(buckets)}):
            if width not in compile_s:
                batch = {k: (v[:args.bucket_batch, :width] if v.ndim == 2 else v[:args.bucket_batch])
                         for k, v in arrays.items()}
                compile_s[width] = seconds_of(functools.partial(ours.step, batch))
                print(f"  width {width}: first step (compile if new) {compile_s[width]:.2f} s", flush=True)

    def epochs() -> dict[str, dict]:
        """One epoch each, the two taking turns step by step so that a loaded moment slows both alike;
        a step's time runs from asking the iterator for its batch to the step's results being ready."""
        iterators = {name: iterator(buckets) for name, buckets in contenders.items()}
        runs = {name: dict(seconds=0.0, real_tokens=0, positions=0, steps=0, step_s_by_width={})
                for name in contenders}
        while iterators:
            for name in list(iterators):
                started = time.perf_counter()
                batch = next(iterators[name], None)
                if batch is None:
                    del iterators[name]
                    continue
                batch.pop("__valid__")
                batch.pop("__index__")
                ours.step(batch)
                spent = time.perf_counter() - started
                run = runs[name]
                run["seconds"] += spent
                run["real_tokens"] += int(np.sum(batch["attention_mask"]))
                run["positions"] += batch["attention_mask"].size
                run["steps"] += 1
                run["step_s_by_width"].setdefault(batch["input_ids"].shape[1], []).append(spent)
        return runs

    runs = {name: [] for name in contenders}
    for round_index in range(args.bucket_repeats):
        for name, run in epochs().items():
            runs[name].append(run)
            print(f"  epoch {round_index + 1} {name}: {run['steps']} steps, {run['real_tokens']} real tokens of "
                  f"{run['positions']} positions, {run['seconds']:.2f} s", flush=True)
    out = dict(corpus=dict(texts=args.corpus, batch=args.bucket_batch, real_tokens=int(lengths.sum()),
                           length_median=float(np.median(lengths)), length_mean=float(lengths.mean()),
                           length_max=int(lengths.max()),
                           share_per_bucket=[float(np.mean(np.searchsorted(widths, lengths) == i))
                                             for i in range(len(widths))]),
               bucket_widths=list(widths), first_step_s_by_width=compile_s, epochs=runs)
    for name in contenders:
        best = min(runs[name], key=lambda r: r["seconds"])
        out[name] = dict(best, real_tokens_per_s=best["real_tokens"] / best["seconds"],
                         positions_per_s=best["positions"] / best["seconds"],
                         rows=best["steps"] * args.bucket_batch)
    out["ratio_real_tokens_per_s"] = (out["buckets"]["real_tokens_per_s"]
                                      / out["pad_to_max_length"]["real_tokens_per_s"])
    print(f"  real tokens/s: buckets {out['buckets']['real_tokens_per_s']:.1f}, pad to max "
          f"{out['pad_to_max_length']['real_tokens_per_s']:.1f}: ratio {out['ratio_real_tokens_per_s']:.2f}",
          flush=True)
    return out


# -- report --------------------------------------------------------------------------------------
def exact_command(argv: list[str] | None) -> str:
    return shlex.join(["python", "benchmarks/finetune.py", *(sys.argv[1:] if argv is None else argv)])


def throughput_lines(result: dict) -> list[str]:
    lines = [
        "## Training samples/s (every row full length)", "",
        ("| batch x length | ours samples/s | reference samples/s | **ours / reference** (per round) | "
         "fraction of matmul peak, ours / reference | optimizer share of a step, ours / reference |"),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, row in result["throughput"].items():
        low, high = min(row["ratio_per_round"]), max(row["ratio_per_round"])
        lines.append(
            f"| {key} | {row['samples_per_s']['ours']:.2f} | {row['samples_per_s']['reference']:.2f} | "
            f"**{row['ratio_of_best']:.2f}x** ({low:.2f} to {high:.2f}) | "
            f"{row['fraction_of_peak']['ours']:.2f} / {row['fraction_of_peak']['reference']:.2f} | "
            f"{row['optimizer_share']['ours']:.2f} / {row['optimizer_share']['reference']:.2f} |")
    first = next(iter(result["throughput"].values()))
    lines += [
        "",
        ("- Best step seconds and first steps: " + "; ".join(
            f"{k}: ours {r['best_s']['ours']:.2f} s (first, compile included, "
            f"{r['first']['ours_compile_and_step_s']:.1f} s), reference {r['best_s']['reference']:.2f} s"
            + (f" (first {r['first']['reference_first_step_s']:.1f} s)" if "reference_first_step_s" in r["first"]
               else "")
            for k, r in result["throughput"].items()) + "."),
        ("- CPU seconds of a step (user + system time of the process, best of the rounds; other processes' "
         "load moves it much less than wall time, so it is a second view on a shared machine): " + "; ".join(
            f"{k}: ours {r['cpu_s_best']['ours']:.1f} s (system {_best_system(r['usage']['ours'])}), reference "
            f"{r['cpu_s_best']['reference']:.1f} s (system {_best_system(r['usage']['reference'])}), reference / "
            f"ours **{r['ratio_of_cpu_s']:.2f}x**" for k, r in result["throughput"].items()) + "."),
        ("- Counted FLOPs per step (matmuls of forward x 3, head included; embeddings, norms, softmax, "
         "GELU, loss and optimizer not counted): " + ", ".join(
            f"{k} {r['counted_gflop_per_step']:.0f} GFLOP" for k, r in result["throughput"].items()) + "."),
        (f"- Optimizer share, best optimizer seconds over the best step's: reference = clip_grad_norm_ + AdamW "
         f"step + scheduler + zero_grad timed inside each step (best "
         f"{first['optimizer_share']['reference_optimizer_best_s']:.2f} s); ours = the same update (gradient norm, "
         f"clip, AdamW, apply) jitted alone with donation, on a fixed gradient tree, timed in the rounds of the "
         f"first batch size "
         f"(best {first['optimizer_share']['ours_optimizer_only_best_s']:.2f} s): XLA fuses it into the step, so "
         f"ours is an estimate. The {result['config']['vocab_size']:,} x {result['config']['hidden_size']} word "
         f"embedding is "
         f"{result['embedding_share_of_params']:.0%} of the parameters: most of the update's memory traffic."),
        "",
    ]
    return lines


def _best_system(usage: list[dict]) -> str:
    """System seconds and page faults of the step with the least CPU time."""
    best = min(usage, key=lambda u: u["cpu"])
    return f"{best['system']:.1f} s, {best['page_faults'] / 1e6:.2f} M page faults"


def bucket_lines(result: dict) -> list[str]:
    b = result["buckets"]
    c = b["corpus"]
    lines = [
        "## Length buckets vs padding to the longest (ours, one epoch)", "",
        (f"Skewed corpus: {c['texts']} texts, lengths log-normal clipped to [4, {result['length']}] (median "
         f"{c['length_median']:.0f}, mean {c['length_mean']:.1f}; per bucket "
         f"{', '.join(f'{w}: {share:.0%}' for w, share in zip(b['bucket_widths'], c['share_per_bucket'], strict=True))}"
         f"); batch {c['batch']}; `BatchIterator` shuffled with drop_remainder=True "
         f"as `finetune` builds it (a bucket's incomplete last batch is dropped, so the rows differ a little); "
         f"the two epochs take turns step by step."),
        "",
        "| | steps | rows | real tokens | positions (pads included) | seconds | real tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in (("buckets", f"buckets {tuple(b['bucket_widths'])}"), ("pad_to_max_length", "buckets=None")):
        r = b[name]
        lines.append(f"| {label} | {r['steps']} | {r['rows']} | {r['real_tokens']:,} | {r['positions']:,} | "
                     f"{r['seconds']:.1f} | {r['real_tokens_per_s']:.1f} |")
    by_width = {}
    for name in ("buckets", "pad_to_max_length"):
        for width, spent in b[name]["step_s_by_width"].items():
            by_width.setdefault(int(width), []).extend(spent)
    lines += [
        "",
        f"- **buckets / pad to max_length, real tokens/s: {b['ratio_real_tokens_per_s']:.2f}x**.",
        ("- Median seconds of a step by width (batch " + str(c["batch"]) + "): " + ", ".join(
            f"{w}: {float(np.median(by_width[w])):.2f} s ({len(by_width[w])} steps)" for w in sorted(by_width))
         + "."),
        ("- Each width's program was compiled before the epochs; first step per width (compile included "
         "where new): " + ", ".join(f"{w}: {s:.1f} s" for w, s in b["first_step_s_by_width"].items()) + "."),
        "",
    ]
    return lines


def markdown_report(result: dict) -> str:
    env, cfg = result["environment"], result["config"]
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    dirty = " (with uncommitted edits in the checkout)" if env["git"]["dirty"] else ""
    lines = [
        "# Fine-tuning: xlmr-jax's train step vs a PyTorch loop over transformers", "",
        f"Measured {result['timestamp']} by `benchmarks/finetune.py` in {result['wall_s']:.0f} s. Command:", "",
        "```", result["command"], "```", "",
        ("Ratios ours/reference (> 1: ours is faster), from the best of the rounds in which the two took "
         "turns. The machine is shared and noisy: ratios are the claim, absolute times are context only."), "",
        (f"- Machine: {env['cpu']}, {env['available_cores']} cores (torch.set_num_threads("
         f"{env['torch_num_threads']})); device {env['device']}; peak RSS of the run {result['peak_rss_gb']:.1f} GB; "
         f"glibc malloc keeping freed memory (`keep_freed_host_memory`, as `xlmr-jax finetune`, for both sides): "
         f"{result.get('host_memory_kept')}."),
        f"- Versions: {versions}; Python {env['python']}; commit {env['git']['commit']}{dirty}.",
        (f"- Model: sequence classification, {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, "
         f"FFN {cfg['intermediate_size']}, {cfg['num_attention_heads']} heads, vocabulary {cfg['vocab_size']:,}, "
         f"{result['num_params']['ours']:,} parameters (reference {result['num_params']['reference']:,}); "
         f"random weights; fp32; dropout {result['dropout']} on both sides; ours with the layers "
         + ("unrolled (`unroll_layers`)" if result.get("unroll_layers", False) else "in a scan loop")
         + (", finetune's default." if result.get("unroll_layers", False) == FinetuneConfig.unroll_layers
            else ", not finetune's default.")),
        (f"- Optimisation (both): AdamW lr {LEARNING_RATE}, weight decay {WEIGHT_DECAY} off biases and LayerNorm "
         f"weights, betas {BETAS}, eps {EPS}, clip to global norm {MAX_GRAD_NORM}, linear schedule with "
         f"{WARMUP_RATIO:.0%} warmup over {SCHEDULE_STEPS} steps. Ours: `make_optimizer` + `make_train_step("
         f"with_grad_norm=True)` as `finetune` builds them; reference: `torch.optim.AdamW(fused=True)` (the "
         f"Trainer's default `adamw_torch_fused`) over the Trainer's two parameter groups "
         f"({result['reference_groups'][0]} decayed tensors, {result['reference_groups'][1]} not), SDPA attention."),
        (f"- XLA fp32 matmul rate of the machine, measured in the run ({result['matmul_n']}^3, best of 5, measured "
         f"{len(result['peak_fp32_gflops_measurements'])} times between the workloads, the best kept: "
         f"{', '.join(f'{g:.0f}' for g in result['peak_fp32_gflops_measurements'])}): "
         f"**{result['peak_fp32_gflops']:.0f} GFLOP/s**."),
        "",
    ]
    lines += throughput_lines(result) + bucket_lines(result)
    lines += ["Machine-readable: `finetune.json` next to this file.", ""]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    args = parse_args(argv)
    # As `xlmr-jax finetune` does, before any thread starts (xlmr_jax/host_memory.py); it is
    # process-wide, so the reference's steps run with the same malloc settings.
    from xlmr_jax.host_memory import keep_freed_host_memory

    host_memory_kept = keep_freed_host_memory()
    cores = available_cores()
    torch.set_num_threads(cores)  # XLA's CPU pool uses every core too
    device = choose_device()
    env = environment(device)
    print(f"device {device}; {env['cpu']}, {cores} cores; dropout {args.dropout}", flush=True)
    peaks: list[float] = []  # measured several times: a loaded moment only lowers it, so the best is kept

    matmul_n = 512 if args.quick else 2048

    def measure_peak() -> None:
        peaks.append(matmul_peak_gflops(matmul_n))
        print(f"XLA fp32 matmul rate: {peaks[-1]:.0f} GFLOP/s", flush=True)

    measure_peak()
    config = benchmark_config(args)

    print("building ours ...", flush=True)
    ours = Ours(config, args.dropout)
    embedding = config.vocab_size * config.hidden_size
    result = dict(
        benchmark=RESULTS_STEM, timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        command=exact_command(argv), quick=args.quick, dropout=args.dropout, length=args.length,
        unroll_layers=args.unroll_layers,
        repeats=args.repeats, config=config.to_dict(), environment=env,
        embedding_share_of_params=embedding / ours.num_params, host_memory_kept=host_memory_kept,
    )
    print("building the reference ...", flush=True)
    theirs = Reference(config, device)
    result.update(num_params=dict(ours=ours.num_params, reference=theirs.num_params),
                  reference_groups=theirs.decay_groups, init_s=dict(ours=ours.init_s, reference=theirs.init_s))
    result["throughput"] = throughput(ours, theirs, config, args, measure_peak)
    del theirs  # not needed for the bucket epochs: free its memory
    gc.collect()
    print(f"buckets vs pad to max_length, {args.corpus} texts, batch {args.bucket_batch} ...", flush=True)
    result["buckets"] = buckets_vs_padding(ours, config, args)
    measure_peak()
    result.update(peak_fp32_gflops=max(peaks), peak_fp32_gflops_measurements=peaks, matmul_n=matmul_n)
    for row in result["throughput"].values():
        row["fraction_of_peak"] = {side: rate / max(peaks) for side, rate in row["gflop_per_s"].items()}
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["wall_s"] = time.perf_counter() - started
    print(markdown_report(result))
    if args.quick:
        print("--quick: smoke check only, results files left untouched")
    else:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"{RESULTS_STEM}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS_DIR / f"{RESULTS_STEM}.md").write_text(markdown_report(result))
        print(f"wrote {RESULTS_DIR / RESULTS_STEM}.json and .md")
    return result


if __name__ == "__main__":
    main()
