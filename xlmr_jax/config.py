"""XLM-RoBERTa configuration: a frozen dataclass that reads and writes HF `config.json`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

# The two layouts of the reference, served by the same classes here.
POST_LN_MODEL_TYPES = ("xlm-roberta", "roberta")
PRE_LN_MODEL_TYPE = "xlm-roberta-xl"

# What `transformers` fills in when a key is absent from config.json. These are the reference
# CLASS defaults, not the released checkpoints' values (eps 1e-12 vs 1e-5, type_vocab 2 vs 1...):
# reading a config.json must give what the reference would build from the same file.
_HF_CLASS_DEFAULTS = {
    "xlm-roberta": dict(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
    ),
    "xlm-roberta-xl": dict(
        vocab_size=250880, hidden_size=2560, num_hidden_layers=36, num_attention_heads=32,
        intermediate_size=10240, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
    ),
}
_HF_CLASS_DEFAULTS["roberta"] = _HF_CLASS_DEFAULTS["xlm-roberta"]

_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
          "max_position_embeddings", "type_vocab_size")
_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id")
_BOOLS = ("use_cache", "is_decoder", "add_cross_attention", "tie_word_embeddings", "remat", "unroll_layers")
_PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")
_SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish", "tanh")
_PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")

# Keys of config.json that are ours to interpret; every other key is kept verbatim in `extra`
# so that writing the config back loses nothing the user had.
_OWN_KEYS = (
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
    "max_position_embeddings", "type_vocab_size", "initializer_range", "layer_norm_eps",
    "pad_token_id", "bos_token_id", "eos_token_id", "use_cache", "classifier_dropout", "is_decoder",
    "add_cross_attention", "tie_word_embeddings", "problem_type", "id2label", "label2id",
    "num_labels", "position_embedding_type",
)


@dataclasses.dataclass(frozen=True, eq=True)
class XLMRobertaConfig:
    """Hyper-parameters of an XLM-RoBERTa model.

    The defaults are those of the released `xlm-roberta-base` checkpoint. Use `from_json_file` /
    `from_dict` for a checkpoint's own config (missing keys then take the reference's class
    defaults, exactly as `transformers` would), or a preset: `XLMRobertaConfig.preset("large")`.
    """

    model_type: str = "xlm-roberta"
    vocab_size: int = 250002
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    use_cache: bool = True
    classifier_dropout: float | None = None
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True
    problem_type: str | None = None
    id2label: dict[int, str] | None = None
    # Not part of config.json: recompute each layer in the backward pass to save activation memory.
    remat: bool = False
    # Not part of config.json: run the layers as straight-line code instead of a lax.scan loop.
    # The same numbers (up to rounding); no per-layer slicing of the stacked weights or stacking of
    # the backward pass's saved activations, so a train step is faster (XLA CPU, base sizes:
    # 0.92x the step time at batch 8 x 128; with GELU's hand-written gradient 0.94x at 32 x 128),
    # but the program grows with depth (compile time 1.6x at 12 layers). `xlmr-jax finetune`
    # turns it on (`--no-unroll-layers` keeps the loop).
    unroll_layers: bool = False
    # Not part of config.json: the feed-forward block (up-projection, GELU, down-projection,
    # residual and LayerNorm) runs over chunks of about this many tokens, one after another (a loop
    # over slices of the sequence axis; the same numbers up to rounding), so that its 4x-wide
    # intermediate stays in the processor's cache instead of making round trips to memory. None:
    # automatic, chunks of `modeling.chunking.AUTO_CHUNK_TOKENS` for inference on CPU (XLA CPU, base
    # sizes: 0.93-0.94x the forward time at 32 x 128 and 0.94x at 8 x 512; no gain for a train step,
    # whose backward keeps the activations anyway); 0: never; an int: always, at that size.
    ffn_chunk_tokens: int | None = None
    # Unknown config.json keys, written back unchanged by `to_dict`.
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = _config_problems(self)
        if problems:
            raise InvalidConfigError(problems)

    def __hash__(self) -> int:
        # Modules keep the config as static metadata, which jit hashes; dict fields are frozen here.
        return hash(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))

    # -- derived values -------------------------------------------------------------------
    @property
    def pre_layer_norm(self) -> bool:
        """True for the XL/XXL layout (LayerNorm before each sub-layer, final encoder LayerNorm)."""
        return self.model_type == PRE_LN_MODEL_TYPE

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @property
    def max_sequence_length(self) -> int:
        """Longest sequence whose position ids fit: positions start at pad_token_id + 1."""
        return self.max_position_embeddings - self.pad_token_id - 1

    @property
    def classifier_dropout_rate(self) -> float:
        if self.classifier_dropout is None:
            return self.hidden_dropout_prob
        return self.classifier_dropout

    def replace(self, **changes: Any) -> XLMRobertaConfig:
        """A copy with some fields changed; `num_labels=N` is accepted and sets `id2label`."""
        if "num_labels" in changes:
            n = changes.pop("num_labels")
            if not _is_int(n) or n < 1:
                raise InvalidConfigError([f'"num_labels" must be a positive int, got {_shown(n)}'])
            changes.setdefault("id2label", {i: f"LABEL_{i}" for i in range(n)})
        return dataclasses.replace(self, **changes)

    # -- presets --------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> XLMRobertaConfig:
        """Released sizes: "base", "large", "xl" (3.5B) or "xxl" (10.7B)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**PRESETS[name]).replace(**overrides)

    # -- HF config.json -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> XLMRobertaConfig:
        """Build from an HF config dict; `source` names the file in error messages."""
        data = dict(data)
        model_type = data.get("model_type", "xlm-roberta")
        if not isinstance(model_type, str) or model_type not in _HF_CLASS_DEFAULTS:
            raise ValueError(
                f"{source}: model_type={model_type!r} is not an XLM-RoBERTa model; expected one of "
                f"{sorted(_HF_CLASS_DEFAULTS)}"
            )
        position_embedding_type = data.get("position_embedding_type", "absolute")
        if position_embedding_type != "absolute":
            raise ValueError(
                f"{source}: position_embedding_type={position_embedding_type!r} is not supported; "
                "only 'absolute' (the type of every released XLM-R checkpoint)"
            )
        kwargs: dict[str, Any] = {**_HF_CLASS_DEFAULTS[model_type]}
        fields = {f.name for f in dataclasses.fields(cls)}
        for key in _OWN_KEYS:
            if key in data and key in fields:
                kwargs[key] = data[key]
        problems: list[str] = []
        id2label, num_labels = data.get("id2label"), data.get("num_labels")
        if id2label is not None:
            kwargs["id2label"] = _parse_id2label(id2label, problems)
            if kwargs["id2label"] and num_labels is not None and num_labels != len(kwargs["id2label"]):
                problems.append(f'"num_labels" is {_shown(num_labels)} but "id2label" has '
                                f"{len(kwargs['id2label'])} labels")
        elif num_labels is not None:
            if _is_int(num_labels) and num_labels >= 1:
                kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(num_labels)}
            else:
                problems.append(f'"num_labels" must be a positive int, got {_shown(num_labels)}')
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if kwargs.get(key) is None:
                kwargs[key] = getattr(cls, key)
        if isinstance(kwargs.get("eos_token_id"), list) and kwargs["eos_token_id"]:
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        kwargs["extra"] = {k: v for k, v in data.items() if k not in _OWN_KEYS}
        try:
            config = cls(**kwargs)
        except InvalidConfigError as err:
            problems += err.problems
        if problems:
            raise InvalidConfigError(problems, source) from None
        return config

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> XLMRobertaConfig:
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as err:  # a directory, unreadable, a symlink loop, not text
            raise ValueError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")  # noqa: TRY004
        return cls.from_dict(data, source=path)

    def to_dict(self) -> dict[str, Any]:
        """An HF config dict that `transformers.AutoConfig` reads back to the same model."""
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name in ("extra", "remat", "unroll_layers", "ffn_chunk_tokens", "id2label"):
                continue
            out[f.name] = getattr(self, f.name)
        out["position_embedding_type"] = "absolute"
        if self.id2label is not None:
            out["id2label"] = {str(k): v for k, v in self.id2label.items()}
            out["label2id"] = {v: k for k, v in self.id2label.items()}
        if self.pre_layer_norm:
            out["architectures"] = out.get("architectures", ["XLMRobertaXLModel"])
        return out

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write config.json atomically (temp file, then rename)."""
        from xlmr_jax.atomic_files import write_json_atomic

        write_json_atomic(path, self.to_dict(), sort_keys=True)


class InvalidConfigError(ValueError):
    """Every problem of a config at once, each naming its key; `source` names the file."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        sep = "\n  " if len(problems) > 1 else " "
        super().__init__(f"{source}:{sep}" + sep.join(problems))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or a finite float (config.json may write 0 for 0.0; NaN and inf are never meant)."""
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _shown(value: Any) -> str:
    """`the str "false"`: type and value, cut short so that a huge value never fills the message."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return f"the {type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _parse_id2label(id2label: Any, problems: list[str]) -> dict[int, str] | None:
    """config.json keys are strings ("0"); they must be integers, the labels strings."""
    try:
        parsed = {int(k): v for k, v in id2label.items()}
        if parsed and all(isinstance(v, str) for v in parsed.values()):
            return parsed
    except (AttributeError, TypeError, ValueError):
        pass
    problems.append(f'"id2label" must map integer ids to label names (str), got {_shown(id2label)}')
    return None


def _config_problems(config: XLMRobertaConfig) -> list[str]:
    """What is wrong with each field (type, range), then with values that must agree."""
    problems: list[str] = []
    invalid: set[str] = set()

    def check(key: str, ok: bool, expected: str) -> None:
        if not ok:
            invalid.add(key)
            problems.append(f'"{key}" must be {expected}, got {_shown(getattr(config, key))}')

    for key in _SIZES:
        value = getattr(config, key)
        check(key, _is_int(value) and value >= 1, "a positive int")
    for key in _TOKEN_IDS:
        value = getattr(config, key)
        check(key, _is_int(value) and value >= 0, "an int >= 0")
    for key in _BOOLS:
        check(key, isinstance(getattr(config, key), bool), "a bool")
    for key in _PROBABILITIES:
        value = getattr(config, key)
        ok = (value is None and key == "classifier_dropout") or (_is_number(value) and 0 <= value <= 1)
        check(key, ok, "a float in [0, 1]" + (" or null" if key == "classifier_dropout" else ""))
    check("layer_norm_eps", _is_number(config.layer_norm_eps) and config.layer_norm_eps > 0, "a float > 0")
    check("initializer_range", _is_number(config.initializer_range) and config.initializer_range >= 0,
          "a float >= 0")
    for key, allowed in (("model_type", POST_LN_MODEL_TYPES + (PRE_LN_MODEL_TYPE,)),
                         ("hidden_act", _SUPPORTED_ACTIVATIONS), ("problem_type", _PROBLEM_TYPES)):
        value = getattr(config, key)
        check(key, isinstance(value, str | None) and value in allowed, f"one of {allowed}")
    if config.id2label is not None:
        check("id2label", isinstance(config.id2label, dict) and len(config.id2label) >= 1
              and all(_is_int(k) and isinstance(v, str) for k, v in config.id2label.items()),
              "a dict of integer ids to label names (str)")
    check("extra", isinstance(config.extra, dict), "a dict")
    check("ffn_chunk_tokens", config.ffn_chunk_tokens is None
          or (_is_int(config.ffn_chunk_tokens) and config.ffn_chunk_tokens >= 0), "an int >= 0 or None")

    def valid(*keys: str) -> bool:
        return not invalid.intersection(keys)

    if valid("hidden_size", "num_attention_heads") and config.hidden_size % config.num_attention_heads:
        problems.append(f'"hidden_size" ({config.hidden_size}) must be divisible by "num_attention_heads" '
                        f"({config.num_attention_heads})")
    if valid("pad_token_id", "vocab_size") and config.pad_token_id >= config.vocab_size:
        problems.append(f'"pad_token_id" ({config.pad_token_id}) must be < "vocab_size" '
                        f"({config.vocab_size})")
    if valid("pad_token_id", "max_position_embeddings") and config.max_sequence_length < 1:
        problems.append(f'"max_position_embeddings" ({config.max_position_embeddings}) must exceed '
                        f'"pad_token_id" + 1 ({config.pad_token_id + 1}): real tokens take the positions '
                        "after it")
    if valid("add_cross_attention", "is_decoder") and config.add_cross_attention and not config.is_decoder:
        problems.append('"add_cross_attention" true needs "is_decoder" true (as in the reference)')
    return problems


_RELEASED = dict(
    layer_norm_eps=1e-5, type_vocab_size=1, max_position_embeddings=514, pad_token_id=1,
    bos_token_id=0, eos_token_id=2, hidden_act="gelu",
)
PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(_RELEASED, model_type="xlm-roberta", vocab_size=250002, hidden_size=768,
                 num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(_RELEASED, model_type="xlm-roberta", vocab_size=250002, hidden_size=1024,
                  num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "xl": dict(_RELEASED, model_type="xlm-roberta-xl", vocab_size=250880, hidden_size=2560,
               num_hidden_layers=36, num_attention_heads=32, intermediate_size=10240),
    "xxl": dict(_RELEASED, model_type="xlm-roberta-xl", vocab_size=250880, hidden_size=4096,
                num_hidden_layers=48, num_attention_heads=32, intermediate_size=16384),
}
