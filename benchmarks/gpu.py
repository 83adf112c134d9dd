"""One GPU run: correctness smoke, bf16 peaks, attention, encoder forward and train-step throughput.

Made to run once, first time, on a GPU machine with nothing to install:

    PYTHONPATH=. python3 benchmarks/gpu.py --out $OUT          # workloads budgeted to 270 s (--budget)
    python benchmarks/gpu.py --smoke --out /tmp/gpu-smoke      # tiny shapes; any machine, CPU too

Sections (each workload is timed on its own, guarded and recorded: a failure records its error
text and the run goes on; once `--budget` seconds have passed, the workloads left are recorded as
skipped). Run in order of priority: 1-4, base encoder forward, train step with attention dropout,
large encoder forward, train step without:
  1. environment: device, versions, CUDA/cuDNN, the fp32 matmul precision of both sides (JAX's
     default on GPU is TF32 for fp32 dots; torch's `allow_tf32` defaults to False);
  2. correctness: a small random XLM-R (every parameter randomised, LayerNorm and biases too) built
     in transformers, saved, loaded by our `from_pretrained`: fp32 logits at matmul precision
     "highest" against torch (fp32, no TF32) on the same device; bf16 with cuDNN attention against
     XLA attention (encoder and causal decoder), a left-padded batch (must take XLA's path),
     bf16 gradients through cuDNN's backward against XLA's;
  3. the measured bf16 matmul peak (jax and torch) next to the card's nominal dense peak;
  4. `jax.nn.dot_product_attention` alone, cuDNN (right padding as key lengths) vs XLA (boolean
     mask), forward and forward+backward, with torch SDPA for scale;
  5. encoder forward (bf16 weights and compute on both sides), base then large, at 64x128,
     16x512 and 1x8192 (positions enlarged to 8194), right-padded batches: ours (cuDNN attention,
     and XLA attention for base) vs transformers SDPA (and SDPA forced to flash attention);
  6. train step, sequence classification, base, 32x128: ours (`make_train_step` +
     `make_optimizer`, fp32 params + bf16 compute) vs a torch loop (fp32 params + bf16 autocast,
     fused AdamW), with attention dropout 0.1 (our explicit attention path) and 0 (cuDNN).
Timing: compile apart (ahead of time), warm-up calls, then best and median of several calls, each
waited for (`block_until_ready` / `torch.cuda.synchronize`). MFU = model FLOPs / median time / peak
(measured: the best matmul call of either side; nominal: the spec sheet), with FLOPs per position
per layer 2*(4h^2 + 2hf) + 4*S*h (pads counted: the dense work done), x3 for a train step;
embeddings and heads not counted. Attention alone: 4*B*S^2*N*d forward, x3.5 forward+backward.

Writes gpu-<date>-<device>.json and .md into --out after every workload (a run cut short keeps
what it measured) and prints the markdown at the end.
"""

from __future__ import annotations

import os

# Before JAX starts: JAX would take 75% of the GPU's memory up front; torch shares the card.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import datetime
import gc
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
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
from xlmr_jax.modeling import attention_choice
from xlmr_jax.modeling.attention_choice import attention_implementation

SEED = 0
FIRST_ORDINARY_TOKEN_ID = 3
# Spec-sheet bf16 dense (no sparsity) peaks, TFLOP/s, by device-name substring (first match wins).
NOMINAL_BF16_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                       ("A100", 312.0), ("L40S", 362.0)]
CUDNN_CUSTOM_CALL = "__cudnn$fmha"


# -- run state: results, budget, writing -----------------------------------------------------------
class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.perf_counter()
        self.on_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
        self.cuda = attention_choice.default_target()[0] == "cuda" and self.on_gpu
        self.torch_device = torch.device("cuda" if self.on_gpu else "cpu")
        self.result: dict = dict(benchmark="gpu", started=_now(), command=_command(), smoke=args.smoke,
                                 budget_s=args.budget, environment={}, workloads=[])
        self.stem: str | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def workload(self, section: str, name: str, fn: Callable[[], dict]) -> dict | None:
        """Runs `fn` unless the budget is spent; records its result, or its error, and writes."""
        entry = dict(section=section, name=name)
        if self.elapsed() > self.args.budget:
            entry.update(status="skipped", reason=f"time budget {self.args.budget:.0f} s spent")
            print(f"[skip] {section} / {name}: budget spent", flush=True)
        else:
            print(f"[run ] {section} / {name} (t={self.elapsed():.0f} s)", flush=True)
            started = time.perf_counter()
            try:
                entry.update(status="ok", **fn())
            except Exception as error:  # noqa: BLE001 - one failure must not end the run
                entry.update(status="error", error=f"{type(error).__name__}: {error}"[:2000],
                             traceback=traceback.format_exc()[-4000:])
                print(f"[fail] {section} / {name}: {entry['error'][:500]}", flush=True)
            entry["seconds"] = round(time.perf_counter() - started, 2)
            _release_memory()
        self.result["workloads"].append(entry)
        self.write()
        return entry if entry["status"] == "ok" else None

    def write(self) -> None:
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        if self.stem is None:
            device = self.result["environment"].get("device_name") or jax.devices()[0].device_kind
            slug = re.sub(r"[^a-z0-9]+", "-", str(device).lower()).strip("-") or "device"
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M")
            self.stem = f"gpu-{stamp}-{slug}{'-smoke' if self.args.smoke else ''}"
        self.result["elapsed_s"] = round(self.elapsed(), 1)
        (out / f"{self.stem}.json").write_text(json.dumps(self.result, indent=2, default=str) + "\n")
        (out / f"{self.stem}.md").write_text(markdown(self.result))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _command() -> str:
    return " ".join(["python3", "benchmarks/gpu.py", *sys.argv[1:]])


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- timing ------------------------------------------------------------------------------------------
def sync_torch() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(call: Callable[[], object], *, warmup: int = 2, target_s: float = 1.0, min_repeats: int = 3,
            max_repeats: int = 20) -> dict:
    """best/median seconds of `call` (which waits for its own result), after warm-up calls; as many
    calls as fit in about `target_s` (within [min_repeats, max_repeats])."""
    for _ in range(warmup):
        call()
    times = []
    started = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - started < target_s):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return dict(best_s=min(times), median_s=statistics.median(times), calls=len(times))


def jax_call(fn, *args) -> Callable[[], object]:
    return lambda: jax.block_until_ready(fn(*args))


def aot(fn, *args, request: str = "auto") -> tuple[Callable, float, bool]:
    """(compiled, compile seconds, whether cuDNN's attention kernel is in the program). Traced
    inside `attention_implementation(request)`: `fn` must be a function made for this call."""
    started = time.perf_counter()
    with attention_implementation(request):
        compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - started
    return compiled, seconds, CUDNN_CUSTOM_CALL in compiled.as_text()


def ours_request(run: Run) -> str:
    """cuDNN or an error on a CUDA GPU (the claim is about cuDNN); the automatic choice elsewhere."""
    return "cudnn" if run.cuda else "auto"


# -- environment ------------------------------------------------------------------------------------
def nominal_peak(device_name: str | None) -> float | None:
    for key, tflops in NOMINAL_BF16_TFLOPS:
        if device_name and key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def environment(run: Run) -> dict:
    jdev = jax.devices()[0]
    env = dict(
        jax_backend=jax.default_backend(), jax_device_kind=jdev.device_kind, jax_devices=len(jax.devices()),
        compute_capability=getattr(jdev, "compute_capability", None),
        attention_target=attention_choice.default_target(),
        torch_cuda_available=torch.cuda.is_available(),
        versions=dict(python=platform.python_version(), jax=jax.__version__, jaxlib=_version("jaxlib"),
                      flax=flax.__version__, torch=torch.__version__, transformers=transformers.__version__,
                      optax=_version("optax"), numpy=np.__version__),
        torch_cuda=torch.version.cuda,
        torch_cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        matmul_precision=dict(
            jax_default_matmul_precision=jax.config.jax_default_matmul_precision,
            jax_note="None = XLA's default: fp32 dots run in TF32 on NVIDIA GPUs (Ampere+); bf16 dots "
                     "accumulate in fp32",
            torch_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            torch_float32_matmul_precision=torch.get_float32_matmul_precision(),
        ),
        xla_python_client_mem_fraction=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
        xla_flags=os.environ.get("XLA_FLAGS"),
        git=_git(),
    )
    try:  # private, may move between jax versions: informative only
        from jax._src.lib import cuda_versions

        if cuda_versions is not None:
            env["jax_cuda_runtime"] = cuda_versions.cuda_runtime_get_version()
            env["jax_cudnn"] = cuda_versions.cudnn_get_version()
    except Exception as error:  # noqa: BLE001
        env["jax_cuda_versions_error"] = repr(error)
    if torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name()
        props = torch.cuda.get_device_properties(0)
        env["device_memory_gib"] = round(props.total_memory / 2**30, 1)
    else:
        env["device_name"] = jdev.device_kind
    env["nvidia_smi"] = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"])
    peak = nominal_peak(env["device_name"])
    env["nominal_bf16_dense_tflops"] = None if peak is None else peak / 1e12
    return env


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001
        return None


def _run(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except Exception as error:  # noqa: BLE001
        return f"unavailable: {type(error).__name__}"


def _git() -> dict:
    root = Path(__file__).resolve().parent.parent
    commit = _run(["git", "-C", str(root), "rev-parse", "HEAD"])
    dirty = _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    return dict(commit=commit, dirty=None if dirty is None or dirty.startswith("unavailable") else bool(dirty))


# -- inputs and models --------------------------------------------------------------------------------
def padded_batch(batch: int, length: int, vocab: int, pad: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids: row 0 full, the others 3/4 to all of `length`; one row: no padding."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(1, (3 * length) // 4), length + 1, size=batch)
    lengths[0] = length
    ids = rng.integers(FIRST_ORDINARY_TOKEN_ID, vocab, size=(batch, length))
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    return np.where(mask == 1, ids, pad).astype(np.int32), mask


def sizes(smoke: bool) -> dict[str, xlmr_jax.XLMRobertaConfig]:
    if smoke:
        tiny = dict(vocab_size=1000, intermediate_size=128, hidden_size=64)
        return dict(base=xlmr_jax.XLMRobertaConfig.preset("base", num_hidden_layers=2, num_attention_heads=4, **tiny),
                    large=xlmr_jax.XLMRobertaConfig.preset("large", num_hidden_layers=3, num_attention_heads=4,
                                                           **tiny))
    return dict(base=xlmr_jax.XLMRobertaConfig.preset("base"), large=xlmr_jax.XLMRobertaConfig.preset("large"))


def shapes(smoke: bool) -> list[tuple[int, int]]:
    return [(4, 16), (2, 32), (1, 64)] if smoke else [(64, 128), (16, 512), (1, 8192)]


def with_positions_for(config, length: int):
    """8192 positions need a bigger position table (pad + 1 + length rows)."""
    needed = length + config.pad_token_id + 1
    return config.replace(max_position_embeddings=needed) if needed > config.max_position_embeddings else config


def flops_per_position(config, length: int) -> float:
    h, f = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * (2 * (4 * h * h + 2 * h * f) + 4 * length * h)


def hf_config(config, **overrides) -> transformers.PretrainedConfig:
    return transformers.AutoConfig.for_model(**{**config.to_dict(), **overrides})


def torch_model(run: Run, cls, config, *, dtype=None, **kwargs) -> torch.nn.Module:
    """A transformers model built straight on the device (no CPU init of 250k x h embeddings)."""
    with torch.device(run.torch_device):
        model = cls(config, **kwargs) if not hasattr(cls, "from_config") else cls.from_config(config, **kwargs)
    if getattr(model.config, "_attn_implementation", "sdpa") != "sdpa":
        raise RuntimeError(f"transformers chose attention {model.config._attn_implementation!r}, not sdpa")
    model = model.to(run.torch_device)
    return model.to(dtype) if dtype is not None else model


def our_model(cls, config, *, dtype, param_dtype, **kwargs):
    # built under jit: eager random init of a 250k-row embedding goes op by op
    model = nnx.jit(lambda: cls(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(SEED), **kwargs))()
    jax.block_until_ready(nnx.state(model))
    return model


# -- 2. correctness ------------------------------------------------------------------------------------
def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random, LayerNorm weights and biases too (as tests/reference_models.py)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            noise = noise / param.shape[1] ** 0.5 if param.ndim == 2 and "embeddings" not in name else noise * 0.3
            if name.endswith("LayerNorm.weight") or "layer_norm.weight" in name:
                noise = 1.0 + noise
            param.copy_(noise)


def small_reference(run: Run, cls, directory: Path, **overrides) -> torch.nn.Module:
    config = transformers.XLMRobertaConfig(
        vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
        max_position_embeddings=80, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, **overrides)
    torch.manual_seed(SEED)
    model = cls(config)
    randomise(model, SEED)
    model.save_pretrained(str(directory), safe_serialization=True)
    return model.to(run.torch_device).eval()


def correctness_batch(vocab: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Right-padded (ids, mask) and the same sequences left padded."""
    rng = np.random.default_rng(1)
    lengths, width = [64, 50, 33, 7], 64
    ids = np.full((len(lengths), width), 1, np.int32)
    left = np.full_like(ids, 1)
    for row, n in enumerate(lengths):
        body = rng.integers(FIRST_ORDINARY_TOKEN_ID, vocab, size=n)
        body[0], body[-1] = 0, 2
        ids[row, :n], left[row, width - n:] = body, body
    return ids, (ids != 1).astype(np.int32), left, (left != 1).astype(np.int32)


def max_abs(a, b, rows: np.ndarray | None = None) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if rows is not None:
        a, b = a[rows.astype(bool)], b[rows.astype(bool)]
    return float(np.max(np.abs(a - b)))


def logits_of(model, request: str, ids, mask) -> tuple[np.ndarray, bool]:
    graphdef, state = nnx.split(model)
    compiled, _, has_cudnn = aot(lambda s, i, m: nnx.merge(graphdef, s)(i, m).logits, state, ids, mask,
                                 request=request)
    return np.asarray(compiled(state, ids, mask), np.float32), has_cudnn


def correctness_lm(run: Run, kind: str) -> dict:
    cls_hf = transformers.XLMRobertaForMaskedLM if kind == "encoder" else transformers.XLMRobertaForCausalLM
    cls_ours = xlmr_jax.XLMRobertaForMaskedLM if kind == "encoder" else xlmr_jax.XLMRobertaForCausalLM
    overrides = {} if kind == "encoder" else dict(is_decoder=True)
    ids, mask, left_ids, left_mask = correctness_batch()
    with tempfile.TemporaryDirectory() as directory:
        ref = small_reference(run, cls_hf, Path(directory), **overrides)
        ours32 = cls_ours.from_pretrained(directory)
        ours16 = cls_ours.from_pretrained(directory, dtype=jnp.bfloat16)
    with torch.no_grad():
        expected = ref(input_ids=torch.tensor(ids, device=run.torch_device).long(),
                       attention_mask=torch.tensor(mask, device=run.torch_device).long()).logits.float().cpu().numpy()
    out: dict = {}
    with jax.default_matmul_precision("highest"):
        fp32, _ = logits_of(ours32, "auto", ids, mask)
    out["fp32_highest_vs_torch_max_abs"] = max_abs(fp32, expected, mask)
    out["fp32_within_1e-5"] = out["fp32_highest_vs_torch_max_abs"] <= 1e-5
    fp32_default, _ = logits_of(ours32, "auto", ids, mask)
    out["fp32_default_precision_vs_torch_max_abs"] = max_abs(fp32_default, expected, mask)
    fused, out["bf16_cudnn_in_program"] = logits_of(ours16, ours_request(run), ids, mask)
    xla, out["bf16_xla_program_has_cudnn"] = logits_of(ours16, "xla", ids, mask)
    out["bf16_cudnn_vs_xla_max_abs"] = max_abs(fused, xla, mask)
    out["bf16_cudnn_vs_torch_fp32_max_abs"] = max_abs(fused, expected, mask)
    out["bf16_xla_vs_torch_fp32_max_abs"] = max_abs(xla, expected, mask)
    out["bf16_logit_scale_max_abs"] = float(np.max(np.abs(expected[mask.astype(bool)])))
    # left padding is not right padding: the device-side guard must send it to XLA's path
    left_fused, _ = logits_of(ours16, ours_request(run), left_ids, left_mask)
    left_xla, _ = logits_of(ours16, "xla", left_ids, left_mask)
    out["left_padded_auto_vs_xla_max_abs"] = max_abs(left_fused, left_xla, left_mask)
    if kind == "encoder":  # positions start after the pads: left and right padding give the same tokens
        out["left_vs_right_padding_bf16_max_abs"] = max(
            max_abs(left_fused[row][left_mask[row] == 1], fused[row][mask[row] == 1]) for row in range(len(ids)))
    return out


def correctness_gradients(run: Run) -> dict:
    """bf16 gradients of the MLM loss through cuDNN's backward vs XLA's (no dropout)."""
    ids, mask, _, _ = correctness_batch()
    labels = np.where(mask == 1, ids, -100)
    with tempfile.TemporaryDirectory() as directory:
        small_reference(run, transformers.XLMRobertaForMaskedLM, Path(directory))
        model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(directory, dtype=jnp.bfloat16)
    graphdef, state = nnx.split(model)

    def grads_with(request: str):
        def loss(s, i, m, y):
            return nnx.merge(graphdef, s)(i, m, labels=y).loss

        compiled, _, has_cudnn = aot(jax.grad(loss), state, ids, mask, labels, request=request)
        return compiled(state, ids, mask, labels), has_cudnn

    fused, has_cudnn = grads_with(ours_request(run))
    xla, _ = grads_with("xla")
    worst, worst_name = 0.0, None
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(fused), jax.tree.leaves(xla), strict=True):
        scale = float(jnp.max(jnp.abs(b.astype(jnp.float32)))) or 1.0
        rel = float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))) / scale
        if rel > worst:
            worst, worst_name = rel, jax.tree_util.keystr(path)
    return dict(cudnn_in_program=has_cudnn, grad_max_relative_diff_cudnn_vs_xla=worst, worst_leaf=worst_name)


# -- 3. matmul peak ----------------------------------------------------------------------------------
def matmul_peak(run: Run) -> dict:
    n = 256 if run.args.smoke else 8192
    flops = 2.0 * n**3
    key_a, key_b = jax.random.split(jax.random.key(SEED))
    a = jax.random.normal(key_a, (n, n), jnp.bfloat16)
    b = jax.random.normal(key_b, (n, n), jnp.bfloat16)
    jitted = jax.jit(lambda a, b: a @ b)
    jax_times = measure(jax_call(jitted, a, b), warmup=3, target_s=1.0)
    ta = torch.randn(n, n, device=run.torch_device, dtype=torch.bfloat16)
    tb = torch.randn(n, n, device=run.torch_device, dtype=torch.bfloat16)

    def torch_call():
        torch.matmul(ta, tb)
        sync_torch()

    torch_times = measure(torch_call, warmup=3, target_s=1.0)
    peak = nominal_peak(run.result["environment"].get("device_name"))
    rows = [dict(side=side, n=n, **t, tflops=flops / t["best_s"] / 1e12,
                 fraction_of_nominal=None if peak is None else flops / t["best_s"] / peak)
            for side, t in (("jax", jax_times), ("torch", torch_times))]
    measured = max(r["tflops"] for r in rows) * 1e12
    run.result["measured_bf16_peak_flops"] = measured
    return dict(rows=rows, measured_peak_tflops=measured / 1e12,
                nominal_peak_tflops=None if peak is None else peak / 1e12)


def peaks(run: Run) -> tuple[float | None, float | None]:
    return run.result.get("measured_bf16_peak_flops"), nominal_peak(run.result["environment"].get("device_name"))


def with_mfu(run: Run, row: dict, flops: float) -> dict:
    measured, nominal = peaks(run)
    achieved = flops / row["median_s"]  # the peak is a best call; MFU stays on the median (conservative)
    row["tflops"] = achieved / 1e12
    row["mfu_vs_measured"] = None if not measured else achieved / measured
    row["mfu_vs_nominal"] = None if not nominal else achieved / nominal
    return row


# -- 4. attention alone -----------------------------------------------------------------------------
def attention_alone(run: Run, batch: int, length: int, heads: int) -> dict:
    head_dim = 16 if run.args.smoke else 64
    keys = jax.random.split(jax.random.key(SEED), 3)
    q, k, v = (jax.random.normal(key, (batch, length, heads, head_dim), jnp.bfloat16) for key in keys)
    _, mask_np = padded_batch(batch, length, 10, 1)
    lengths = jnp.asarray(mask_np.sum(-1), jnp.int32)
    mask = jnp.asarray(mask_np, bool)[:, None, None, :]
    padded = bool((mask_np == 0).any())
    flops = 4.0 * batch * length * length * heads * head_dim
    rows = []

    def cudnn_fwd(q, k, v, n):
        return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=n if padded else None,
                                            implementation="cudnn")

    def xla_fwd(q, k, v, m):
        return jax.nn.dot_product_attention(q, k, v, mask=m if padded else None, implementation="xla")

    contenders = [("jax xla (bool mask)", xla_fwd, mask)]
    if run.cuda:
        contenders.insert(0, ("jax cudnn (key lengths)", cudnn_fwd, lengths))
    for name, fwd, masking in contenders:
        for mode in ("fwd", "fwd+bwd"):
            def fn(q, k, v, masking, fwd=fwd, mode=mode):
                if mode == "fwd":
                    return fwd(q, k, v, masking)
                return jax.grad(lambda q, k, v: jnp.sum(fwd(q, k, v, masking).astype(jnp.float32)),
                                argnums=(0, 1, 2))(q, k, v)

            rows.append(_guarded(run, f"{name} {mode}", flops * (1 if mode == "fwd" else 3.5),
                                 lambda fn=fn, masking=masking: _time_jax(fn, q, k, v, masking)))
    tq, tk, tv = (torch.randn(batch, heads, length, head_dim, device=run.torch_device, dtype=torch.bfloat16)
                  for _ in range(3))
    tmask = torch.tensor(mask_np, device=run.torch_device, dtype=torch.bool)[:, None, None, :] if padded else None

    def torch_fwd():
        with torch.inference_mode():
            torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask)
        sync_torch()

    rows.append(_guarded(run, "torch sdpa fwd" + (" (bool mask)" if padded else ""), flops,
                         lambda: dict(**measure(torch_fwd, target_s=0.5))))
    return dict(batch=batch, length=length, heads=heads, head_dim=head_dim, right_padded=padded, rows=rows)


def _time_jax(fn, *args) -> dict:
    compiled, compile_s, has_cudnn = aot(fn, *args)
    return dict(compile_s=compile_s, cudnn_in_program=has_cudnn, **measure(jax_call(compiled, *args), target_s=0.5))


def _guarded(run: Run, name: str, flops: float, fn: Callable[[], dict]) -> dict:
    """One contender of a workload: its timings with MFU, or its error (the others still run)."""
    try:
        return with_mfu(run, dict(contender=name, **fn()), flops)
    except Exception as error:  # noqa: BLE001
        print(f"       {name}: {type(error).__name__}: {str(error)[:300]}", flush=True)
        return dict(contender=name, error=f"{type(error).__name__}: {error}"[:1500])
    finally:
        _release_memory()


# -- 5. encoder forward ----------------------------------------------------------------------------
def encoder_forward(run: Run, size: str, batch: int, length: int, with_xla: bool) -> dict:
    config = with_positions_for(sizes(run.args.smoke)[size], length)
    ids, mask = padded_batch(batch, length, config.vocab_size, config.pad_token_id)
    tokens, positions = int(mask.sum()), mask.size
    flops = positions * flops_per_position(config, length)
    rows = _our_encoder_rows(run, config, ids, mask, flops, with_xla)
    _release_memory()
    rows += _their_encoder_rows(run, config, ids, mask, flops)
    for row in rows:
        if "best_s" in row:
            row["tokens_per_s"] = tokens / row["median_s"]
            row["positions_per_s"] = positions / row["median_s"]
    return dict(size=size, batch=batch, length=length, tokens=tokens, positions=positions,
                layers=config.num_hidden_layers, hidden=config.hidden_size, rows=rows,
                params="bf16 weights and compute on both sides")


def _our_encoder_rows(run: Run, config, ids, mask, flops: float, with_xla: bool) -> list[dict]:
    model = our_model(xlmr_jax.XLMRobertaModel, config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
                      add_pooling_layer=False)
    graphdef, state = nnx.split(model)
    jids, jmask = jax.device_put(jnp.asarray(ids)), jax.device_put(jnp.asarray(mask))
    requests = [("ours, cuDNN attention" if run.cuda else "ours, auto attention", ours_request(run))]
    if with_xla:
        requests.append(("ours, XLA attention", "xla"))
    rows = []
    for name, request in requests:
        def timed(request=request):
            fn = lambda s, i, m: nnx.merge(graphdef, s)(i, m).last_hidden_state  # a fresh function per request
            compiled, compile_s, has_cudnn = aot(fn, state, jids, jmask, request=request)
            return dict(compile_s=compile_s, cudnn_in_program=has_cudnn,
                        **measure(jax_call(compiled, state, jids, jmask)))

        rows.append(_guarded(run, name, flops, timed))
    return rows


def _their_encoder_rows(run: Run, config, ids, mask, flops: float) -> list[dict]:
    theirs = torch_model(run, transformers.AutoModel, hf_config(config), dtype=torch.bfloat16,
                         attn_implementation="sdpa", add_pooling_layer=False).eval()
    tids = torch.tensor(ids, device=run.torch_device).long()
    tmask = torch.tensor(mask, device=run.torch_device).long()

    def forward(backend=None):
        def call():
            with torch.inference_mode():
                if backend is None:
                    theirs(input_ids=tids, attention_mask=tmask)
                else:
                    from torch.nn.attention import sdpa_kernel

                    with sdpa_kernel(backend):
                        theirs(input_ids=tids, attention_mask=tmask)
            sync_torch()
        return call

    rows = [_guarded(run, "transformers sdpa", flops, lambda: measure(forward()))]
    if run.on_gpu:
        from torch.nn.attention import SDPBackend

        rows.append(_guarded(run, "transformers sdpa, flash only", flops,
                             lambda: measure(forward(SDPBackend.FLASH_ATTENTION))))
    return rows


# -- 6. train step --------------------------------------------------------------------------------------
def train_step(run: Run, attention_dropout: float) -> dict:
    from xlmr_jax.training.optim import make_optimizer
    from xlmr_jax.training.steps import make_train_step

    batch, length = (4, 16) if run.args.smoke else (32, 128)
    config = sizes(run.args.smoke)["base"].replace(num_labels=2, attention_probs_dropout_prob=attention_dropout)
    ids, mask = padded_batch(batch, length, config.vocab_size, config.pad_token_id)
    labels = np.random.default_rng(SEED).integers(0, 2, size=batch).astype(np.int32)
    tokens, positions = int(mask.sum()), mask.size
    flops = 3 * positions * flops_per_position(config, length)
    rows = []

    def ours():
        model = our_model(xlmr_jax.XLMRobertaForSequenceClassification, config, dtype=jnp.bfloat16,
                          param_dtype=jnp.float32)
        optimizer = make_optimizer(nnx.state(model, nnx.Param), learning_rate=2e-5, total_steps=1000,
                                   warmup_steps=100, weight_decay=0.01)
        state, step = make_train_step(model, optimizer)
        data = dict(input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask), labels=jnp.asarray(labels))
        key = jax.random.key(SEED)
        holder = {"state": state, "i": 0, "loss": None}

        def call():  # automatic attention: the explicit path with attention dropout, else cuDNN on GPU
            holder["i"] += 1
            holder["state"], holder["loss"] = step(holder["state"], data, jax.random.fold_in(key, holder["i"]))
            jax.block_until_ready(holder["loss"])

        started = time.perf_counter()
        call()
        first_s = time.perf_counter() - started  # compile included
        timings = measure(call, warmup=1)
        return dict(first_step_s=first_s, final_loss=float(holder["loss"]), **timings)

    rows.append(_guarded(run, "ours (make_train_step, fp32 params + bf16 compute)", flops, ours))

    def theirs():
        hf = hf_config(config, num_labels=2)
        model = torch_model(run, transformers.AutoModelForSequenceClassification, hf,
                            attn_implementation="sdpa").train()
        fused = run.on_gpu
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01, fused=fused)
        tids = torch.tensor(ids, device=run.torch_device).long()
        tmask = torch.tensor(mask, device=run.torch_device).long()
        tlabels = torch.tensor(labels, device=run.torch_device).long()
        losses = []

        def call():
            with torch.autocast(run.torch_device.type, dtype=torch.bfloat16):
                loss = model(input_ids=tids, attention_mask=tmask, labels=tlabels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync_torch()
            losses.append(loss)

        timings = measure(call, warmup=2)
        return dict(fused_adamw=fused, final_loss=float(losses[-1]), **timings)

    rows.append(_guarded(run, "torch loop (fp32 params + bf16 autocast, AdamW)", flops, theirs))
    for row in rows:
        if "best_s" in row:
            row["tokens_per_s"] = tokens / row["median_s"]
            row["positions_per_s"] = positions / row["median_s"]
    return dict(batch=batch, length=length, tokens=tokens, attention_dropout=attention_dropout,
                hidden_dropout=config.hidden_dropout_prob, rows=rows,
                our_attention="explicit einsum (dropout)" if attention_dropout > 0 else "cuDNN on GPU")


# -- report ----------------------------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")


ROW_COLUMNS = ["contender", "side", "compile_s", "best_s", "median_s", "calls", "tokens_per_s", "tflops",
               "mfu_vs_measured", "mfu_vs_nominal", "cudnn_in_program", "final_loss", "error"]


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"# GPU run: {env.get('device_name', '?')}", "",
             (f"Started {result['started']}, {result.get('elapsed_s', 0):.0f} s; command `{result['command']}`"
              f"{' (smoke: tiny shapes)' if result['smoke'] else ''}."), ""]
    if env:
        versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
        lines += [(f"- Versions: {versions}; torch CUDA {env.get('torch_cuda')}, "
                   f"torch cuDNN {env.get('torch_cudnn')}, jax CUDA runtime {env.get('jax_cuda_runtime')}, "
                   f"jax cuDNN {env.get('jax_cudnn')}."),
                  (f"- Device: {env.get('device_name')} (JAX {env.get('jax_backend')} {env.get('jax_device_kind')}, "
                   f"compute capability {env.get('compute_capability')}, {env.get('device_memory_gib')} GiB); "
                   f"nvidia-smi: {env.get('nvidia_smi')}."),
                  f"- fp32 matmul precision: {json.dumps(env.get('matmul_precision'))}.",
                  (f"- Nominal bf16 dense peak {env.get('nominal_bf16_dense_tflops')} TFLOP/s; measured "
                   f"{_fmt((result.get('measured_bf16_peak_flops') or 0) / 1e12)} TFLOP/s. MFU: model FLOPs "
                   "(2(4h^2+2hf)+4Sh per position per layer, x3 for training) / median time / peak."), ""]
    section = None
    for entry in result["workloads"]:
        if entry["section"] != section:
            section = entry["section"]
            lines += [f"## {section}", ""]
        head = f"**{entry['name']}**: {entry['status']} ({entry.get('seconds', 0)} s)"
        if entry["status"] != "ok":
            lines += [head + f" - {_fmt(entry.get('error') or entry.get('reason'))}", ""]
            continue
        scalars = {k: v for k, v in entry.items()
                   if k not in ("section", "name", "status", "seconds", "rows", "traceback")}
        lines += [head + (" - " + ", ".join(f"{k} {_fmt(v)}" for k, v in scalars.items()) if scalars else ""), ""]
        if entry.get("rows"):
            columns = [c for c in ROW_COLUMNS if any(c in row for row in entry["rows"])]
            lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in entry["rows"]]
            lines.append("")
    return "\n".join(lines) + "\n"


# -- main -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu-<date>-<device>.json and .md")
    parser.add_argument("--smoke", action="store_true", help="tiny configs and shapes: checks every path, any machine")
    parser.add_argument("--budget", type=float, default=270.0,
                        help="seconds after which the remaining workloads are skipped (default 270)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    run = Run(args)
    try:
        run.result["environment"] = environment(run)
    except Exception as error:  # noqa: BLE001
        run.result["environment"] = dict(error=f"{type(error).__name__}: {error}")
    print(json.dumps(run.result["environment"], indent=1, default=str), flush=True)
    if not run.on_gpu:
        print("note: no GPU for both jax and torch: cuDNN contenders are left out, numbers say nothing "
              "about accelerators", flush=True)
    run.write()

    run.workload("correctness", "MLM encoder, fp32 vs torch, bf16 cuDNN vs XLA", lambda: correctness_lm(run, "encoder"))
    run.workload("correctness", "causal decoder, fp32 vs torch, bf16 cuDNN vs XLA",
                 lambda: correctness_lm(run, "decoder"))
    run.workload("correctness", "bf16 gradients, cuDNN vs XLA", lambda: correctness_gradients(run))
    run.workload("bf16 matmul peak", "square matmul", lambda: matmul_peak(run))
    for batch, length in shapes(args.smoke):
        for heads in ((4,) if args.smoke else (12, 16)):
            run.workload("attention alone", f"{batch}x{length}, {heads} heads",
                         lambda b=batch, n=length, h=heads: attention_alone(run, b, n, h))
    for batch, length in shapes(args.smoke):
        run.workload("encoder forward", f"base {batch}x{length}",
                     lambda b=batch, n=length: encoder_forward(run, "base", b, n, with_xla=True))
    run.workload("train step", "base, attention dropout 0.1", lambda: train_step(run, 0.1))
    for batch, length in shapes(args.smoke):
        run.workload("encoder forward", f"large {batch}x{length}",
                     lambda b=batch, n=length: encoder_forward(run, "large", b, n, with_xla=False))
    run.workload("train step", "base, attention dropout 0", lambda: train_step(run, 0.0))

    run.result["finished"] = _now()
    run.write()
    print(markdown(run.result))
    print(f"wrote {Path(args.out) / run.stem}.json and .md", flush=True)
    return run.result


if __name__ == "__main__":
    main()
