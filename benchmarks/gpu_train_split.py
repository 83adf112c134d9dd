"""Where a training step's time goes (GPU, bf16 compute, fp32 params): forward + backward alone,
the AdamW update alone (over every parameter, and without the 250k-row word embedding), and the
whole jitted step; torch's fwd+bwd and fused AdamW step measured the same way.

    PYTHONPATH=. python3 benchmarks/gpu_train_split.py --out $OUT [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu

import xlmr_jax
from xlmr_jax.training.optim import make_optimizer
from xlmr_jax.training.steps import make_train_step


def best_of(call, repeats: int = 20) -> dict:
    call()
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return dict(best_s=min(times), median_s=float(np.median(times)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    batch, length = (4, 16) if args.smoke else (32, 128)
    config = gpu.sizes(args.smoke)["base"].replace(num_labels=2, attention_probs_dropout_prob=0.0)
    ids, mask = gpu.padded_batch(batch, length, config.vocab_size, config.pad_token_id)
    labels = np.zeros(batch, np.int32)
    data = dict(input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask), labels=jnp.asarray(labels))
    model = gpu.our_model(xlmr_jax.XLMRobertaForSequenceClassification, config, dtype=jnp.bfloat16,
                          param_dtype=jnp.float32)
    graphdef, params = nnx.split(model)
    rows = {}

    def loss_fn(p):
        return nnx.merge(graphdef, p)(**data, deterministic=True).loss

    grad = jax.jit(jax.value_and_grad(loss_fn))
    rows["ours: forward + backward"] = best_of(lambda: jax.block_until_ready(grad(params)))
    _, grads = grad(params)
    for name, opt in [("ours: make_optimizer update (AdamW, mask, clip, schedule)",
                       make_optimizer(params, learning_rate=2e-5, total_steps=1000, warmup_steps=100,
                                      weight_decay=0.01, max_grad_norm=1.0)),
                      ("ours: optax.adamw update alone", optax.adamw(2e-5, weight_decay=0.01))]:
        opt_state = opt.init(params)
        update = jax.jit(lambda g, s, p, opt=opt: optax.apply_updates(p, opt.update(g, s, p)[0]))
        rows[name] = best_of(lambda update=update, s=opt_state: jax.block_until_ready(update(grads, s, params)))
    word = params["roberta"]["embeddings"]["word_embeddings"]["embedding"].value
    rows["word embedding bytes (fp32 param)"] = dict(bytes=int(word.size * 4))
    state, step = make_train_step(model, make_optimizer(nnx.state(model, nnx.Param), learning_rate=2e-5,
                                                        total_steps=1000, warmup_steps=100, weight_decay=0.01,
                                                        max_grad_norm=1.0))
    holder = {"state": state}

    def whole():
        holder["state"], loss = step(holder["state"], data)
        jax.block_until_ready(loss)

    rows["ours: whole jitted train step"] = best_of(whole)

    import torch
    import transformers

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hf = transformers.XLMRobertaConfig(**gpu.hf_config(config, num_labels=2).to_dict())
    tm = transformers.XLMRobertaForSequenceClassification(hf).to(device).train()
    topt = torch.optim.AdamW(tm.parameters(), lr=2e-5, weight_decay=0.01, fused=device.type == "cuda")
    tids, tmask = torch.tensor(ids, device=device).long(), torch.tensor(mask, device=device).long()
    tlabels = torch.tensor(labels, device=device).long()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def fwd_bwd():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = tm(input_ids=tids, attention_mask=tmask, labels=tlabels).loss
        loss.backward()
        sync()

    rows["torch: forward + backward (autocast bf16)"] = best_of(fwd_bwd)

    def opt_step():
        topt.step()
        sync()

    rows["torch: fused AdamW step"] = best_of(opt_step)
    result = dict(device=str(jax.devices()[0].device_kind), torch_device=str(device), batch=batch, length=length,
                  rows=rows)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"gpu-train-split-{jax.devices()[0].device_kind.replace(' ', '-').lower()}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
