"""THE table between HF PyTorch checkpoint keys and Flax parameter paths, used in both directions.

Keys are written relative to the backbone (`embeddings...`, `encoder.layer.{i}...`) or to the
model top level for heads (`lm_head...`, `classifier...`). `{i}` is a layer index: per-layer
tensors are stacked on the leading `layers` axis of one Flax leaf (the scanned encoder).
Linear weights are transposed (PyTorch stores (out, in), Flax kernels are (in, out)).
"""

from __future__ import annotations

import dataclasses
import re

COPY = "copy"
TRANSPOSE = "transpose"


@dataclasses.dataclass(frozen=True)
class Rule:
    hf: str  # HF key template; "{i}" marks the layer index
    flax: str  # Flax path, dot-joined
    transform: str  # COPY or TRANSPOSE
    backbone: bool  # True: relative to the `roberta.` prefix; False: model top level

    @property
    def stacked(self) -> bool:
        return "{i}" in self.hf

    def hf_key(self, layer: int | None = None) -> str:
        return self.hf.replace("{i}", str(layer)) if self.stacked else self.hf


def _linear(hf: str, flax: str, backbone: bool) -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{flax}.kernel", TRANSPOSE, backbone),
            Rule(f"{hf}.bias", f"{flax}.bias", COPY, backbone)]


def _norm(hf: str, flax: str, backbone: bool) -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{flax}.scale", COPY, backbone),
            Rule(f"{hf}.bias", f"{flax}.bias", COPY, backbone)]


_LAYER_LINEARS = [
    "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
    "crossattention.self.query", "crossattention.self.key", "crossattention.self.value",
    "crossattention.output.dense", "intermediate.dense", "output.dense",
]
_LAYER_NORMS = [
    "attention.output.LayerNorm", "output.LayerNorm", "crossattention.output.LayerNorm",  # post-LN
    "attention.self_attn_layer_norm", "crossattention.self_attn_layer_norm", "LayerNorm",  # pre-LN (XL)
]


def _build_rules() -> list[Rule]:
    rules = [
        Rule(f"embeddings.{name}.weight", f"embeddings.{name}.embedding", COPY, True)
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    ]
    rules += _norm("embeddings.LayerNorm", "embeddings.LayerNorm", True)
    for name in _LAYER_LINEARS:
        rules += _linear(f"encoder.layer.{{i}}.{name}", f"encoder.layer.{name}", True)
    for name in _LAYER_NORMS:
        rules += _norm(f"encoder.layer.{{i}}.{name}", f"encoder.layer.{name}", True)
    rules += _norm("encoder.LayerNorm", "encoder.LayerNorm", True)  # XL final LayerNorm
    rules += _linear("pooler.dense", "pooler.dense", True)
    # heads
    rules += _linear("lm_head.dense", "lm_head.dense", False)
    rules += _norm("lm_head.layer_norm", "lm_head.layer_norm", False)
    rules.append(Rule("lm_head.bias", "lm_head.bias", COPY, False))
    rules += _linear("lm_head.decoder", "lm_head.decoder", False)  # untied decoders only
    rules += _linear("classifier.dense", "classifier.dense", False)
    rules += _linear("classifier.out_proj", "classifier.out_proj", False)
    rules += _linear("classifier", "classifier", False)
    rules += _linear("qa_outputs", "qa_outputs", False)
    return rules


RULES: tuple[Rule, ...] = tuple(_build_rules())

# Keys that carry no parameter of their own.
# Buffers some saves contain (older transformers wrote `position_ids`).
IGNORED_BACKBONE_KEYS = frozenset({"embeddings.position_ids", "embeddings.token_type_ids"})
# Aliases of other tensors in tied models: used only when the canonical key is absent.
TIED_ALIASES = {"lm_head.decoder.bias": "lm_head.bias"}
# Tied to the word embeddings when config.tie_word_embeddings (the released models).
TIED_DECODER_KEY = "lm_head.decoder.weight"
# Legacy LayerNorm names (TF-era saves).
LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}
# Top-level module names of the backbone, to tell a backbone key from a head key.
BACKBONE_ROOTS = ("embeddings.", "encoder.", "pooler.")

_LAYER_INDEX = re.compile(r"^encoder\.layer\.(\d+)\.")
_BY_HF = {(r.hf, r.backbone): r for r in RULES}
_BY_FLAX = {r.flax: r for r in RULES}


def match(relative_key: str, backbone: bool) -> tuple[Rule, int | None] | None:
    """The one rule for a key (relative to the backbone when `backbone`), and its layer index."""
    layer = None
    template = relative_key
    if backbone:
        found = _LAYER_INDEX.match(relative_key)
        if found:
            layer = int(found.group(1))
            template = "encoder.layer.{i}." + relative_key[found.end():]
    rule = _BY_HF.get((template, backbone))
    return None if rule is None else (rule, layer)


def rule_for_flax_path(flax_path: str) -> Rule | None:
    """Reverse lookup: the rule writing a Flax path (relative to the backbone for backbone leaves)."""
    return _BY_FLAX.get(flax_path)


# -- the `roberta.` prefix ----------------------------------------------------------------------------
# Task models keep the backbone under `hf_prefix` ("roberta"); the bare model is the backbone
# itself (hf_prefix ""). These three say where a leaf sits, both ways, for every writer and reader.

def split_model_path(dotted: str, hf_prefix: str) -> tuple[str, bool]:
    """(path relative to the backbone or to the top level, is_backbone) of a model's dotted leaf path."""
    if hf_prefix:
        if dotted.startswith(hf_prefix + "."):
            return dotted[len(hf_prefix) + 1:], True
        return dotted, False
    return dotted, dotted.startswith(BACKBONE_ROOTS)


def model_path(relative: str, backbone: bool, hf_prefix: str) -> tuple[str, ...]:
    """The model's leaf path for a path relative to the backbone (or to the top level)."""
    parts = tuple(relative.split("."))
    return ((hf_prefix,) + parts) if backbone and hf_prefix else parts


def hf_name(rule: Rule, hf_prefix: str, layer: int | None) -> str:
    """The reference's key written by `rule` (for one layer of a stacked leaf) in a model with `hf_prefix`."""
    key = rule.hf_key(layer)
    return f"{hf_prefix}.{key}" if rule.backbone and hf_prefix else key
