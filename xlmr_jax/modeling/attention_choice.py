"""Which attention implementation serves a call: a pure function of what is known at trace time.

Three implementations:
  * "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's fused flash attention.
    Right padding goes in as per-row key lengths and the decoder's mask as `is_causal`, so no
    (batch, heads, queries, keys) mask or bias array is ever built.
  * "xla": `jax.nn.dot_product_attention(implementation="xla")` with a boolean mask (what runs on
    CPU and TPU; the numerics every parity test pins down).
  * "explicit": our einsum path, the only one that returns the weights or drops probabilities out.

The choice is made in Python while tracing; whether a padding mask is really right padding is
data, so a "cudnn" choice for a padded batch is guarded on device (`right_padding_guard`): a batch
that is not right padded takes the "xla" path in the same compiled function.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp

CUDNN, XLA, EXPLICIT = "cudnn", "xla", "explicit"

# What the mask of a call is, as the callers build it (see attention.AttentionMask).
MASK_NONE = "none"  # every query sees every key
MASK_PADDING = "padding"  # from an attention_mask (batch, keys): maybe right padding, known on device
MASK_CAUSAL = "causal"  # square causal mask of a decoder without cache
MASK_PADDING_CAUSAL = "padding_causal"  # both
MASK_OTHER = "other"  # anything else: a cache's offset causal mask, a user's array
MASK_KINDS = (MASK_NONE, MASK_PADDING, MASK_CAUSAL, MASK_PADDING_CAUSAL, MASK_OTHER)

REQUESTS = ("auto", CUDNN, XLA)
_FUSED_DTYPES = ("bfloat16", "float16")
_MIN_COMPUTE_CAPABILITY = (8, 0)  # cuDNN flash attention: Ampere and later
_HOPPER = (9, 0)


@dataclasses.dataclass(frozen=True)
class AttentionChoice:
    implementation: str  # CUDNN, XLA or EXPLICIT
    reason: str
    is_causal: bool = False  # cudnn only: the causal mask is cuDNN's own (no mask array)
    key_lengths: bool = False  # cudnn only: padding given as per-row key lengths
    right_padding_guard: bool = False  # cudnn only: a batch that is not right padded goes to "xla"


def max_cudnn_head_dim(compute_capability: tuple[int, int] | None) -> int:
    """The largest head_dim cuDNN flash attention takes (jax checks the same: 256 from Hopper on)."""
    return 256 if compute_capability is not None and compute_capability >= _HOPPER else 128


def choose_attention(
    *,
    platform: str,
    dtype,
    head_dim: int,
    mask_kind: str,
    has_cache: bool = False,
    wants_weights: bool = False,
    dropout_active: bool = False,
    compute_capability: tuple[int, int] | None = None,
    requested: str = "auto",
) -> AttentionChoice:
    """The implementation for one attention call, and why.

    `platform` is the target's ("cpu", "tpu", "cuda", "rocm"); `dtype` that of the queries;
    `has_cache` says the call belongs to a decoding step (keys/values from a cache);
    `requested="xla"` never takes cuDNN, `requested="cudnn"` raises where cuDNN cannot serve
    (never a silent fallback)."""
    if mask_kind not in MASK_KINDS:
        raise ValueError(f"mask_kind must be one of {MASK_KINDS}, got {mask_kind!r}")
    if requested not in REQUESTS:
        raise ValueError(f"requested attention implementation must be one of {REQUESTS}, got {requested!r}")
    choice = _choose(platform, jnp.dtype(dtype).name, head_dim, mask_kind, has_cache, wants_weights,
                     dropout_active, compute_capability, requested)
    if requested == CUDNN and choice.implementation != CUDNN:
        raise ValueError(f"cuDNN attention was requested but cannot serve this call: {choice.reason}")
    return choice


def _choose(platform, dtype_name, head_dim, mask_kind, has_cache, wants_weights, dropout_active,
            compute_capability, requested) -> AttentionChoice:
    if wants_weights:
        return AttentionChoice(EXPLICIT, "attention weights requested: fused kernels do not return them")
    if dropout_active:
        # cuDNN can drop probabilities out inside its kernel (jax._src.cudnn.fused_attention_stablehlo
        # .dot_product_attention(dropout_rate=...), a private API), but not usably here: its seed is a
        # static int, not our dropout_rng, and XLA's source shows each cuDNN graph keeping its own
        # philox offset, advanced on every run, the forward's and the backward's separately. Our
        # layers are scanned: the backward kernels run in reverse layer order (and the forward again
        # under remat), so the backward would regenerate other masks than the forward drew: wrong
        # gradients, silently (read from XLA's source, not measured). The einsum path stays exact.
        return AttentionChoice(EXPLICIT, "attention dropout active: cuDNN's in-kernel dropout masks "
                                         "cannot be matched between forward and backward in scanned layers")
    if requested == XLA:
        return AttentionChoice(XLA, "XLA requested")
    if platform != "cuda":
        return AttentionChoice(XLA, f"platform {platform!r}: cuDNN attention needs a CUDA GPU")
    if dtype_name not in _FUSED_DTYPES:
        return AttentionChoice(XLA, f"{dtype_name} inputs: cuDNN flash attention takes bf16/fp16 only")
    if has_cache:
        return AttentionChoice(XLA, "KV cache (decoding): the mask is offset by the cache index")
    if compute_capability is None or compute_capability < _MIN_COMPUTE_CAPABILITY:
        return AttentionChoice(XLA, f"compute capability {compute_capability}: cuDNN flash attention "
                                    f"needs {_MIN_COMPUTE_CAPABILITY} or later")
    limit = max_cudnn_head_dim(compute_capability)
    if head_dim % 8 != 0 or head_dim > limit:
        return AttentionChoice(XLA, f"head_dim {head_dim}: cuDNN takes multiples of 8 up to {limit}")
    if mask_kind == MASK_OTHER:
        return AttentionChoice(XLA, "mask is neither right padding nor a plain causal mask")
    causal = mask_kind in (MASK_CAUSAL, MASK_PADDING_CAUSAL)
    padded = mask_kind in (MASK_PADDING, MASK_PADDING_CAUSAL)
    return AttentionChoice(
        CUDNN,
        "cuDNN fused attention" + (" (causal)" if causal else "")
        + (" with key lengths; XLA if the batch is not right padded" if padded else ""),
        is_causal=causal,
        # Key lengths only, never query lengths: those would zero the pad query rows, which the
        # reference (and XLA's path) compute like any row; skipping them would save little.
        # cuDNN's causal diagonal starts top-left like the mask's (jax tests cuDNN against XLA with
        # causal + padding and unequal query/key lengths).
        key_lengths=padded,
        right_padding_guard=padded,
    )


# -- what the caller asks for (read while tracing) -------------------------------------------------
_REQUESTED: contextvars.ContextVar[str] = contextvars.ContextVar("xlmr_jax_attention", default="auto")


@contextlib.contextmanager
def attention_implementation(name: str) -> Iterator[None]:
    """Within the block, functions *traced* take attention `name`: "auto" (default), "xla" (never
    cuDNN) or "cudnn" (cuDNN or an error). Read at trace time, and JAX reuses the traces of a
    Python function it has seen (whatever `jax.jit` wraps it): jit a function created inside the
    block, as the benchmarks do; a model's eager calls keep what they first compiled."""
    if name not in REQUESTS:
        raise ValueError(f"attention implementation must be one of {REQUESTS}, got {name!r}")
    token = _REQUESTED.set(name)
    try:
        yield
    finally:
        _REQUESTED.reset(token)


def requested_implementation() -> str:
    return _REQUESTED.get()


# -- the target (impure: reads JAX's devices) --------------------------------------------------------
def default_target() -> tuple[str, tuple[int, int] | None]:
    """(platform, compute capability) of the device a computation traced now lands on by default.

    Platforms as `jax.lax.platform_dependent` names them ("cpu", "tpu", "cuda", "rocm"). A
    computation placed elsewhere (e.g. CPU arrays on a GPU machine) is still safe: the cuDNN call
    is staged under `platform_dependent`, which lowers the XLA branch for any other platform."""
    device = getattr(jax.config, "jax_default_device", None)
    if device is None:
        device = jax.devices()[0]
    elif isinstance(device, str):
        device = jax.devices(device)[0]
    platform = device.platform
    if platform == "gpu":  # CUDA and ROCm devices both say "gpu"
        version = getattr(getattr(device, "client", None), "platform_version", None)
        if version is None:
            raise RuntimeError(f"jax {jax.__version__}: cannot tell a CUDA from a ROCm GPU "
                               "(Device.client.platform_version is missing)")
        platform = "cuda" if "cuda" in version.lower() else "rocm" if "rocm" in version.lower() else "gpu"
    capability = None
    if platform == "cuda":
        raw = getattr(device, "compute_capability", None)
        if raw is not None:
            major, minor = str(raw).split(".")[:2]
            capability = (int(major), int(minor))
    return platform, capability
