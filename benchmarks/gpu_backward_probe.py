"""Why the backward pass costs many forwards on GPU: forward and gradient time of the base
sequence classifier (bf16 compute, fp32 params, batch 32 x 128) as one thing changes at a time.

    PYTHONPATH=. python3 benchmarks/gpu_backward_probe.py --out $OUT [--smoke]
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu
import jax
import jax.numpy as jnp
from flax import nnx
from gpu_train_split import best_of

import xlmr_jax
from xlmr_jax.modeling.attention_choice import attention_implementation

smoke = "--smoke" in sys.argv
batch, length = (4, 16) if smoke else (32, 128)
base = gpu.sizes(smoke)["base"].replace(num_labels=2, attention_probs_dropout_prob=0.0)
ids, mask = gpu.padded_batch(batch, length, base.vocab_size, base.pad_token_id)
data = dict(input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask), labels=jnp.zeros(batch, jnp.int32))
variants = {
    "12 layers, erf gelu": dict(),
    "12 layers, tanh gelu": dict(hidden_act="gelu_new"),
    "12 layers, remat": dict(remat=True),
    "1 layer": dict(num_hidden_layers=1),
    "12 layers, XLA attention": dict(),
}
rows = {}
for name, changes in variants.items():
    config = base.replace(**changes)
    model = gpu.our_model(xlmr_jax.XLMRobertaForSequenceClassification, config, dtype=jnp.bfloat16,
                          param_dtype=jnp.float32)
    graphdef, params = nnx.split(model)

    def loss(p, graphdef=graphdef):
        return nnx.merge(graphdef, p)(**data).loss

    request = "xla" if "XLA" in name else "auto"
    with attention_implementation(request):
        forward = jax.jit(loss)
        grad = jax.jit(jax.grad(loss))
        rows[name] = dict(forward=best_of(lambda f=forward, p=params: jax.block_until_ready(f(p))),
                          grad=best_of(lambda g=grad, p=params: jax.block_until_ready(g(p))))
    print(name, json.dumps(rows[name]), flush=True)
    del model, params
out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else Path("/tmp")
(out / "gpu-backward-probe.json").write_text(json.dumps(rows, indent=1))
