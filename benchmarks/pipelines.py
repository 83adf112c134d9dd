"""Pipelines: xlmr-jax vs the reference's, the same checkpoint and texts, in one run.

What it measures
    Inputs are fed as a stream of calls of 100 texts; `cold` is the first pass over them (our
    compiles included: each new shape compiles once), `warm` the best later pass.
    * fill-mask over `--texts` sentences of mixed length (1-4 corpus sentences joined, one `<mask>`
      each): texts/s of `xlmr_jax.pipeline("fill-mask")` vs `transformers.pipeline("fill-mask")`,
      both with the same batch size, top_k 5.
    * embeddings of a skewed corpus (many short texts, a few long ones): texts/s of our
      `sentence-embeddings` pipeline (length buckets) vs our own pad-to-longest (`buckets=None`)
      and vs `sentence_transformers.SentenceTransformer.encode` when it is installed.
    Base sizes (12 layers, hidden 768, vocabulary 250,002) with random weights: speed does not
    depend on the values. The tokenizer is the shipped demo's sentencepiece model padded with
    unused pieces to the released vocabulary size, so both sides decode every predicted id.
    The machine's own fp32 matmul peak (XLA, 2048^3, best of 5) is measured in the same run, and
    each side's useful GFLOP/s (2 x parameters touched per real token, encoder + heads) is given
    as a fraction of it.

Run:  python benchmarks/pipelines.py [--texts 1000] [--batch-size 32] [--quick]
Writes benchmarks/results/pipelines.{json,md} (not with --quick, a smoke check only).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import xlmr_jax
from xlmr_jax.demo import TINY_CHECKPOINT
from xlmr_jax.demo.corpus import SENTENCES

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per contender (best is kept)")
    parser.add_argument("--quick", action="store_true", help="2 layers, hidden 64, 64 texts; writes nothing")
    parser.add_argument("--only", choices=("fill_mask", "embeddings"),
                        help="run one workload; the other's numbers are kept from the last results file")
    return parser.parse_args(argv)


def padded_tokenizer(directory: Path, vocab_size: int) -> None:
    """The demo tokenizer with unused pieces appended up to `vocab_size` fairseq ids."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString((Path(TINY_CHECKPOINT) / "sentencepiece.bpe.model").read_bytes())
    for i in range(vocab_size - 2 - len(proto.pieces)):
        proto.pieces.add(piece=f"\u2581unused{i}", score=-1000.0, type=pb.ModelProto.SentencePiece.NORMAL)
    (directory / "sentencepiece.bpe.model").write_bytes(proto.SerializeToString())
    shutil.copy(Path(TINY_CHECKPOINT) / "special_tokens_map.json", directory)
    settings = json.loads((Path(TINY_CHECKPOINT) / "tokenizer_config.json").read_text())
    settings["model_max_length"] = 512  # the released models' limit
    (directory / "tokenizer_config.json").write_text(json.dumps(settings))


def build_checkpoint(directory: Path, quick: bool) -> xlmr_jax.XLMRobertaConfig:
    import torch
    import transformers

    sizes = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                 vocab_size=302) if quick else dict(vocab_size=250002)
    config = transformers.XLMRobertaConfig(max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                                           pad_token_id=1, bos_token_id=0, eos_token_id=2, **sizes)
    torch.manual_seed(0)
    transformers.XLMRobertaForMaskedLM(config).save_pretrained(directory)
    padded_tokenizer(directory, config.vocab_size)
    return xlmr_jax.XLMRobertaConfig.from_json_file(directory / "config.json")


def mixed_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 4))).split()
        words[rng.randrange(len(words))] = "<mask>"
        texts.append(" ".join(words))
    return texts


def skewed_texts(count: int, seed: int = 1) -> list[str]:
    """90% one sentence, 9% a few, 1% long (about 300 tokens)."""
    rng = random.Random(seed)
    sizes = [1] * 90 + [4] * 9 + [10]
    return [" ".join(rng.choice(SENTENCES) for _ in range(rng.choice(sizes))) for _ in range(count)]


def stream_seconds(call, texts: list[str], repeats: int, chunk: int = 100) -> dict:
    """The texts fed as a stream of calls of `chunk` texts. `cold`: the first pass (our compiles
    included: each new shape compiles once); `warm`: the best later pass."""
    def one_pass() -> float:
        started = time.perf_counter()
        for start in range(0, len(texts), chunk):
            call(texts[start:start + chunk])
        return time.perf_counter() - started

    cold = one_pass()
    return {"cold": cold, "warm": min(one_pass() for _ in range(repeats))}


def matmul_peak_gflops(n: int = 2048) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(5))
    return 2 * n**3 / best / 1e9


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def real_tokens(tokenizer, texts) -> int:
    return sum(len(ids) for ids in tokenizer(texts, return_tensors=None, truncation=True)["input_ids"])


def encoder_flops_per_token(config) -> float:
    h, f = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * 2 * (4 * h * h + 2 * h * f)


def main(argv=None) -> dict:
    args = parse_args(argv)
    texts_n = 64 if args.quick else args.texts
    work = Path(tempfile.mkdtemp(prefix="xlmr-pipelines-bench-"))
    try:
        config = build_checkpoint(work, args.quick)
        peak = matmul_peak_gflops(512 if args.quick else 2048)
        result = {"peak_fp32_gflops": peak, "config": {k: getattr(config, k) for k in
                  ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")},
                  "batch_size": args.batch_size, "texts": texts_n, "machine": machine()}
        previous = json.loads((RESULTS / "pipelines.json").read_text()) if args.only else {}
        for name, run in (("fill_mask", lambda: fill_mask(work, config, mixed_texts(texts_n), args, peak)),
                          ("embeddings", lambda: embeddings(work, config, skewed_texts(texts_n), args, peak))):
            if args.only in (None, name):
                result[name] = run()
            else:  # kept from the earlier run, which says when and where it ran
                result[name] = {**previous[name], "from_run": previous["machine"]["date"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "pipelines.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "pipelines.md").write_text(markdown(result))
    return result


def fill_mask(work, config, texts, args, peak) -> dict:
    import torch
    import transformers

    ours = xlmr_jax.pipeline("fill-mask", work, batch_size=args.batch_size)
    theirs = transformers.pipeline("fill-mask", model=str(work), batch_size=args.batch_size)
    torch.set_grad_enabled(False)
    tokens = real_tokens(ours.tokenizer, texts)
    seconds = {"ours": stream_seconds(ours, texts, args.repeats),
               "transformers": stream_seconds(theirs, texts, args.repeats)}
    return report(seconds, len(texts), tokens * encoder_flops_per_token(config), peak)


def embeddings(work, config, texts, args, peak) -> dict:
    seconds = {}
    if "sentence-embeddings" in xlmr_jax.TASKS:
        bucketed = xlmr_jax.pipeline("sentence-embeddings", work, batch_size=args.batch_size)
        longest = xlmr_jax.pipeline("sentence-embeddings", work, batch_size=args.batch_size, buckets=None)
        seconds["ours"] = stream_seconds(bucketed, texts, args.repeats)
        seconds["ours, pad to longest"] = stream_seconds(longest, texts, args.repeats)
    try:
        from sentence_transformers import SentenceTransformer, models
    except ImportError:
        pass
    else:
        module = models.Transformer(str(work))
        st = SentenceTransformer(modules=[module, models.Pooling(module.get_word_embedding_dimension(), "mean")])
        seconds["sentence-transformers"] = stream_seconds(lambda chunk: st.encode(chunk, batch_size=args.batch_size),
                                                          texts, args.repeats)
    tokens = real_tokens(xlmr_jax.XLMRobertaTokenizer.from_pretrained(work), texts)
    return report(seconds, len(texts), tokens * encoder_flops_per_token(config), peak) if seconds else {}


def report(seconds: dict, texts: int, useful_flops: float, peak: float) -> dict:
    out = {name: {phase: {"seconds": s, "texts_per_s": texts / s, "fraction_of_peak": useful_flops / s / 1e9 / peak}
                  for phase, s in phases.items()} for name, phases in seconds.items()}
    if "ours" in seconds:
        for name, phases in seconds.items():
            if name != "ours":
                out[f"ours / {name}"] = {phase: phases[phase] / seconds["ours"][phase] for phase in phases}
    return out


def machine() -> dict:
    import torch
    import transformers

    with open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": sys.version.split()[0],
            "jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "device": str(jax.devices()[0]), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def markdown(result: dict) -> str:
    lines = ["# Pipelines: ours vs the reference, one run", "",
             f"Command: `python benchmarks/pipelines.py --texts {result['texts']} --batch-size {result['batch_size']}`",
             f"Machine: {result['machine']}", f"Model: {result['config']} (random weights)",
             f"XLA fp32 matmul peak measured in the run: {result['peak_fp32_gflops']:.0f} GFLOP/s", ""]
    for workload in ("fill_mask", "embeddings"):
        lines += [f"## {workload}", "",
                  "| contender | texts/s, cold (compiles included) | texts/s, warm | fraction of the matmul peak, warm |",
                  "|---|---:|---:|---:|"]
        ratios = []
        for name, row in result[workload].items():
            if name == "from_run":
                ratios.append(f"- (these numbers from the earlier run of {row}, on the same machine)")
            elif name.startswith("ours / "):
                ratios.append(f"- {name}: **{row['cold']:.2f}x** cold, **{row['warm']:.2f}x** warm")
            else:
                lines.append(f"| {name} | {row['cold']['texts_per_s']:.1f} | {row['warm']['texts_per_s']:.1f} | "
                             f"{row['warm']['fraction_of_peak']:.2f} |")
        lines += [""] + ratios + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
