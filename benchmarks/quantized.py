"""Weight-only quantisation: parameter bytes, quality against fp32, forward speed.

    python benchmarks/quantized.py [--quick] [--sizes base,large]

1. Bytes of parameters on the device, summed over the placed arrays (one device), for fp32 and
   int8/int4/nf4 on the base and large configs (random weights; vocab 250002); bf16 and XL/XXL are
   computed from the stored shapes (`arrays.field_shapes`), nothing allocated.
2. Quality: logits at masked positions against the fp32 model (max |diff|, relative RMS) and the
   top-1 agreement of fill-mask predictions, on the held-out text of the trained demo model
   (`xlmr_jax/demo/mini-xlm-roberta`) and on random ids for a base-sized random model.
3. Speed: encoder forward tokens/s of fp32, bf16 and each quantised mode (bf16 compute), one run.
Writes benchmarks/results/quantized.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xlmr_jax import XLMRobertaForMaskedLM
from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.quantization import SCHEMES, quantize_model
from xlmr_jax.quantization import arrays as qa

MODES = ["int8", "int4", "nf4"]
DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "xlmr_jax", "demo",
                    "mini-xlm-roberta")
SIZES = {
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096),
    "xl": dict(num_hidden_layers=36, hidden_size=2560, num_attention_heads=32, intermediate_size=10240),
    "xxl": dict(num_hidden_layers=48, hidden_size=4096, num_attention_heads=32, intermediate_size=16384),
}


def config_for(size: str) -> XLMRobertaConfig:
    return XLMRobertaConfig.preset({"base": "base", "large": "large", "xl": "xl", "xxl": "xxl"}[size])


def placed_bytes(model) -> dict:
    """Bytes on device 0 of every leaf, split into quantised-kernel leaves and the rest."""
    device = jax.devices()[0]
    kernels = other = 0
    for path, var in nnx.to_flat_state(nnx.state(model)):
        name = ".".join(str(p) for p in path)
        held = sum(s.data.nbytes for s in var[...].addressable_shards if s.device == device)
        if name.endswith(".kernel") or ".kernel." in name:
            kernels += held
        else:
            other += held
    return {"kernels": kernels, "other": other, "total": kernels + other}


def computed_bytes(size: str) -> dict:
    """From shapes alone: {mode: {kernels, other, total}} for fp32, bf16 and each scheme."""
    abstract = nnx.eval_shape(lambda: XLMRobertaForMaskedLM(config_for(size), rngs=nnx.Rngs(0)))
    kernel_shapes, other = [], 0
    for path, var in nnx.to_flat_state(nnx.state(abstract)):
        if str(path[-1]) == "kernel":
            kernel_shapes.append(tuple(var.shape))
        else:
            other += math.prod(var.shape)
    out = {}
    fp32_kernels = sum(4 * math.prod(s) for s in kernel_shapes)
    out["fp32"] = {"kernels": fp32_kernels, "other": 4 * other}
    out["bf16"] = {"kernels": fp32_kernels // 2, "other": 2 * other}
    for mode in MODES:
        total = 0
        for shape in kernel_shapes:
            lead = math.prod(shape[:-2])
            for fshape, dtype in qa.field_shapes(SCHEMES[mode], *shape[-2:]).values():
                total += lead * math.prod(fshape) * np.dtype(dtype).itemsize
        out[mode] = {"kernels": total, "other": 4 * other}
    for row in out.values():
        row["total"] = row["kernels"] + row["other"]
    return out


def measure_memory(sizes: list[str]) -> dict:
    results = {}
    for size in sizes:
        config = config_for(size)
        row = {}
        for mode in ["fp32", *MODES]:
            model = XLMRobertaForMaskedLM(config, rngs=nnx.Rngs(0))
            if mode != "fp32":
                quantize_model(model, mode)
            row[mode] = placed_bytes(model)
            del model
        results[size] = {"measured": row, "computed": computed_bytes(size)}
    for size in ("xl", "xxl"):
        results[size] = {"computed": computed_bytes(size)}
    return results


def _mask_logits(model, ids, mask, positions):
    hidden = model.roberta(ids, mask).last_hidden_state
    return np.asarray(model.lm_head.project(model.lm_head.transform(hidden[positions]),
                                            model.roberta.embeddings.word_embeddings.embedding[...]), np.float32)


def quality(model_fp, make_quantised, batches) -> dict:
    """batches: [(ids, mask, (row_index, col_index))]; logits at the masked positions only."""
    want = [_mask_logits(model_fp, *b) for b in batches]
    out = {}
    for mode in MODES:
        for dtype_name, dtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16)):
            model = make_quantised(mode, dtype)
            got = [_mask_logits(model, *b) for b in batches]
            w, g = np.concatenate(want), np.concatenate(got)
            out[f"{mode}/{dtype_name}"] = {
                "max_abs_diff": float(np.abs(g - w).max()),
                "rel_rms": float(np.sqrt(np.mean((g - w) ** 2)) / np.sqrt(np.mean(w ** 2))),
                "top1_agreement": float((g.argmax(-1) == w.argmax(-1)).mean()),
                "masks": len(w),
            }
    return out


def demo_quality(quick: bool) -> dict:
    from xlmr_jax.demo.heldout import masked_rows, packed_rows, read_heldout
    from xlmr_jax.tokenizer import XLMRobertaTokenizer

    tokenizer = XLMRobertaTokenizer.from_pretrained(DEMO)
    heldout = read_heldout(os.path.join(DEMO, "heldout.tsv"))
    rows = [ids for _, ids in packed_rows(tokenizer, heldout, max_length=128)]
    rows = rows[:8] if quick else rows[:96]
    examples = masked_rows(tokenizer, rows)
    batches = []
    for start in range(0, len(examples), 16):
        chunk = examples[start:start + 16]
        length = max(len(m) for m, _, _ in chunk)
        ids = np.full((len(chunk), length), tokenizer.pad_token_id, np.int32)
        for r, (masked, _, _) in enumerate(chunk):
            ids[r, :len(masked)] = masked
        rr = np.concatenate([np.full(len(p), r) for r, (_, p, _) in enumerate(chunk)])
        cc = np.concatenate([p for _, p, _ in chunk])
        batches.append((ids, (ids != tokenizer.pad_token_id).astype(np.int32), (rr, cc)))
    fp = XLMRobertaForMaskedLM.from_pretrained(DEMO)
    result = quality(fp, lambda m, d: XLMRobertaForMaskedLM.from_pretrained(DEMO, quantization=m, dtype=d), batches)
    weights = os.path.join(DEMO, "model.safetensors")
    return {"checkpoint": DEMO, "weights_mtime": time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(weights))),
            "rows": len(rows), "modes": result}


def random_base_quality(quick: bool) -> dict:
    config = config_for("base")
    if quick:
        config = config.replace(num_hidden_layers=2)
    fp = XLMRobertaForMaskedLM(config, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    ids = rng.integers(5, config.vocab_size, (8, 64)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 0, 2
    positions = np.nonzero(rng.random(ids.shape) < 0.15)
    ids[positions] = config.vocab_size - 1
    batches = [(ids, np.ones_like(ids), positions)]

    def make(mode, dtype):
        model = XLMRobertaForMaskedLM(config, dtype=dtype, rngs=nnx.Rngs(0))
        return quantize_model(model, mode)

    return {"config": "base (random init, std 0.02), random ids", "modes": quality(fp, make, batches)}


def forward_speed(quick: bool) -> dict:
    config = config_for("base").replace(num_hidden_layers=2 if quick else 12)
    batch, length = (2, 32) if quick else (8, 128)
    reps = 2 if quick else 5
    ids = np.random.default_rng(0).integers(5, 1000, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    out = {}
    modes = [("fp32", jnp.float32, None), ("bf16", jnp.bfloat16, None)]
    modes += [(f"{m}/bf16", jnp.bfloat16, m) for m in MODES] + [(f"{m}/fp32", jnp.float32, m) for m in MODES]
    for name, dtype, scheme in modes:
        model = XLMRobertaForMaskedLM(config, dtype=dtype, param_dtype=dtype if scheme is None else jnp.float32,
                                      rngs=nnx.Rngs(0)).roberta
        if scheme is not None:
            quantize_model(model, scheme)
        graphdef, state = nnx.split(model)

        @jax.jit
        def forward(state, ids, mask, graphdef=graphdef):
            return nnx.merge(graphdef, state).forward(input_ids=ids, attention_mask=mask).last_hidden_state

        forward(state, ids, mask).block_until_ready()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            forward(state, ids, mask).block_until_ready()
            times.append(time.perf_counter() - start)
        out[name] = {"tokens_per_s": batch * length / min(times), "seconds": min(times)}
        del model, state
    for row in out.values():
        row["vs_fp32"] = row["tokens_per_s"] / out["fp32"]["tokens_per_s"]
        row["vs_bf16"] = row["tokens_per_s"] / out["bf16"]["tokens_per_s"]
    return {"config": f"base encoder, {config.num_hidden_layers} layers, batch {batch} x {length}",
            "modes": out}


def markdown(results: dict) -> str:
    mib = 1 << 20
    lines = ["# Weight-only quantisation", "", f"Device: {results['device']}; jax {jax.__version__}.", "",
             "## Parameter bytes (one device; MiB)", "",
             "| config | mode | matmul kernels | rest (embeddings, LN, biases) | total | kernels / fp32 kernels | source |",
             "|---|---|---|---|---|---|---|"]
    for size, entry in results["memory"].items():
        comp = entry["computed"]
        for mode in ["fp32", "bf16", *MODES]:
            measured = entry.get("measured", {}).get(mode)
            row, source = (measured, "measured (placed arrays)") if measured else (comp[mode], "computed")
            ratio = row["kernels"] / comp["fp32"]["kernels"]
            lines.append(f"| {size} | {mode} | {row['kernels'] / mib:.1f} | {row['other'] / mib:.1f} | "
                         f"{row['total'] / mib:.1f} | {ratio:.3f} | {source} |")
    for key, title in (("demo_quality", "trained demo model, held-out text"),
                       ("random_quality", "base-sized random model")):
        if key not in results:
            continue
        lines += ["", f"## Quality vs fp32: {title}", "",
                  "| mode/compute | top-1 agreement | max abs logit diff | relative RMS | masks |", "|---|---|---|---|---|"]
        for mode, row in results[key]["modes"].items():
            lines.append(f"| {mode} | {row['top1_agreement']:.4f} | {row['max_abs_diff']:.4f} | "
                         f"{row['rel_rms']:.4f} | {row['masks']} |")
    speed = results["speed"]
    lines += ["", f"## Forward speed ({speed['config']})", "",
              "| mode | tokens/s | vs fp32 | vs bf16 |", "|---|---|---|---|"]
    for mode, row in speed["modes"].items():
        lines.append(f"| {mode} | {row['tokens_per_s']:.0f} | {row['vs_fp32']:.2f} | {row['vs_bf16']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="base,large")
    parser.add_argument("--skip", default="", help="comma list of memory,demo,random,speed")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    results = {"device": jax.devices()[0].device_kind}
    if "memory" not in skip:
        results["memory"] = measure_memory([] if args.quick else args.sizes.split(","))
    if "demo" not in skip and os.path.exists(os.path.join(DEMO, "model.safetensors")):
        results["demo_quality"] = demo_quality(args.quick)
    if "random" not in skip:
        results["random_quality"] = random_base_quality(args.quick)
    if "speed" not in skip:
        results["speed"] = forward_speed(args.quick)
    if not args.quick:
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
        with open(os.path.join(out, "quantized.json"), "w") as fh:
            json.dump(results, fh, indent=2)
        with open(os.path.join(out, "quantized.md"), "w") as fh:
            fh.write(markdown(results))
    print(json.dumps(results, indent=1)[:4000])
    return results


if __name__ == "__main__":
    main()
