"""What a JAX user pays for calling a model eagerly, and for each generated token.

What it measures
    * eager: `model(ids, mask)` on the shipped tiny checkpoint (`XLMRobertaForMaskedLM`, the
      README's two sentences) against `xlmr_jax.jit_forward(model)(ids, mask)`, the two taking
      turns; median seconds per call after one warm-up call each, and how many programs XLA
      compiled during the timed calls (JAX's compile log: 0 means eager reuses compiled code).
    * decoding: seconds per generated token of greedy `generate` at several cache lengths
      (prompt + new tokens), on a mid-sized random decoder, each length compiled before timing.
      A cache updated in place costs per token the attention read of the cache (linear in its
      length, small here) plus a fixed part; a cache rebuilt per token adds a full copy.

How to read the numbers
    Seconds on the shared 2-core development CPU are context, not claims; the ratio eager /
    jit_forward and the compile count are the point of the first part, the growth of the
    per-token time with the cache length that of the second.

Run:  python benchmarks/eager_and_decoding.py [--calls 200] [--lengths 64 256 1024] [--no-write]
Writes benchmarks/results/eager_and_decoding.{json,md} (not with --no-write).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

import xlmr_jax
from xlmr_jax import XLMRobertaConfig
from xlmr_jax.demo import TINY_CHECKPOINT
from xlmr_jax.tokenizer import XLMRobertaTokenizer

RESULTS = Path(__file__).parent / "results"
SENTENCES = ["Paris is the capital of <mask>.", "Москва — столица России."]
DECODER = dict(vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
               intermediate_size=512, max_position_embeddings=1100, is_decoder=True)


class _CountCompiles(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.count = 0

    def emit(self, record):
        self.count += record.getMessage().startswith("Compiling ")


def time_call(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def eager_vs_jit(calls: int) -> dict:
    tokenizer = XLMRobertaTokenizer.from_pretrained(TINY_CHECKPOINT)
    batch = tokenizer(SENTENCES, padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(TINY_CHECKPOINT)
    forward = xlmr_jax.jit_forward(model)
    first_eager = time_call(lambda: model(ids, mask).logits)
    first_jit = time_call(lambda: forward(ids, mask).logits)
    counter = _CountCompiles()
    logging.getLogger("jax").addHandler(counter)
    eager, jitted = [], []
    with jax.log_compiles(True):
        for _ in range(calls):
            eager.append(time_call(lambda: model(ids, mask).logits))
            jitted.append(time_call(lambda: forward(ids, mask).logits))
    logging.getLogger("jax").removeHandler(counter)
    return dict(
        batch_shape=list(np.shape(ids)), calls=calls, first_call_s=dict(eager=first_eager, jit_forward=first_jit),
        median_s=dict(eager=statistics.median(eager), jit_forward=statistics.median(jitted)),
        ratio_eager_over_jit=statistics.median(eager) / statistics.median(jitted),
        compiles_during_timed_calls=counter.count,
    )


def decoding(lengths: list[int], prompt: int = 8, batch: int = 4, repeats: int = 3) -> dict:
    model = xlmr_jax.XLMRobertaForCausalLM(XLMRobertaConfig(**DECODER))
    ids = np.random.default_rng(0).integers(3, DECODER["vocab_size"], size=(batch, prompt))
    rows = []
    for length in lengths:
        new = length - prompt
        model.generate(ids, new, eos_token_id=None)  # compile
        seconds = min(time_call(lambda n=new: model.generate(ids, n, eos_token_id=None)) for _ in range(repeats))
        rows.append(dict(cache_length=length, new_tokens=new, seconds=seconds, per_token_ms=seconds / new * 1e3))
    return dict(config=DECODER, batch=batch, prompt=prompt, rows=rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--quick", action="store_true", help="20 calls, cache lengths 64 and 256; writes nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.lengths, args.no_write = 20, [64, 256], True
    result = dict(
        command="python " + " ".join(shlex.quote(a) for a in
                                     ["benchmarks/eager_and_decoding.py", *(sys.argv[1:] if argv is None else argv)]),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=f"{platform.processor() or platform.machine()}, jax {jax.__version__} on {jax.default_backend()}",
        eager=eager_vs_jit(args.calls), decoding=decoding(args.lengths),
    )
    e = result["eager"]
    d = result["decoding"]
    lines = [
        "# Eager calls and decoding cost", "", f"`{result['command']}` — {result['date']}, {result['machine']}", "",
        f"Tiny checkpoint, `XLMRobertaForMaskedLM`, batch {e['batch_shape']}, median of {e['calls']} calls each:",
        "", "| call | first call (s) | median later call (s) |", "|---|---|---|",
        f"| `model(ids, mask)` (eager) | {e['first_call_s']['eager']:.3f} | {e['median_s']['eager']:.5f} |",
        (f"| `jit_forward(model)(ids, mask)` | {e['first_call_s']['jit_forward']:.3f} | "
         f"{e['median_s']['jit_forward']:.5f} |"),
        "",
        (f"eager / jit_forward: {e['ratio_eager_over_jit']:.2f}; programs compiled during the timed calls: "
         f"{e['compiles_during_timed_calls']}."),
        "",
        (f"Greedy `generate`, random decoder {DECODER['num_hidden_layers']} layers x {DECODER['hidden_size']}, "
         f"batch {d['batch']}, prompt {d['prompt']} (best of 3):"),
        "", "| cache length | new tokens | seconds | ms per token |", "|---|---|---|---|",
        *(f"| {r['cache_length']} | {r['new_tokens']} | {r['seconds']:.3f} | {r['per_token_ms']:.3f} |"
          for r in d["rows"]),
    ]
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "eager_and_decoding.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "eager_and_decoding.md").write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
