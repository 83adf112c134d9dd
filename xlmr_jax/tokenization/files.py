"""Reading and writing the Hugging Face tokenizer directory layout.

A directory holds ``sentencepiece.bpe.model`` and optionally ``tokenizer_config.json`` /
``special_tokens_map.json``. What we write loads in ``transformers`` (v4 and v5), including the
``<mask>`` token's ``lstrip`` flag that v5 otherwise drops when it converts the raw model file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece as spm

from xlmr_jax.atomic_files import write_atomic, write_json_atomic  # noqa: F401 - used via files.*
from xlmr_jax.tokenization import tokenizer_json
from xlmr_jax.tokenization.vocab import SpecialTokens

MODEL_FILE = "sentencepiece.bpe.model"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
# XLM-R's position table holds 514 rows, two taken by the padding offset: 512 tokens per sequence.
DEFAULT_MODEL_MAX_LENGTH = 512
# transformers writes 1e30 for "no limit"; anything this large means the same.
_UNLIMITED_THRESHOLD = 10**18
_HF_UNLIMITED = int(1e30)

_SPECIAL_KEYS = {
    "bos": "bos_token",
    "pad": "pad_token",
    "eos": "eos_token",
    "unk": "unk_token",
    "mask": "mask_token",
}


@dataclass(frozen=True)
class TokenizerFiles:
    """Everything read from a tokenizer directory."""

    model_path: Path
    model_bytes: bytes
    model_max_length: int | None
    special: SpecialTokens


def load_processor(model_bytes: bytes, model_path: Path) -> spm.SentencePieceProcessor:
    """A sentencepiece processor from the model bytes; a clear error names the file when it is corrupt."""
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(model_bytes)
    except Exception as error:  # sentencepiece raises RuntimeError/OSError depending on the damage
        raise ValueError(f"{model_path} is not a valid sentencepiece model ({error})") from error
    if processor.get_piece_size() <= 3:
        raise ValueError(
            f"{model_path} holds only {processor.get_piece_size()} pieces; not an XLM-R vocabulary"
        )
    return processor


def read_tokenizer_dir(path: str | os.PathLike) -> TokenizerFiles:
    """Read a tokenizer directory, or a bare ``.model`` file."""
    path = Path(path)
    if path.is_file():
        model_path, directory = path, path.parent if path.name == MODEL_FILE else None
    else:
        model_path, directory = path / MODEL_FILE, path
    if not model_path.is_file() and directory is not None and (directory / tokenizer_json.FILE).is_file():
        model_path = directory / tokenizer_json.FILE  # only tokenizer.json: the same model, rebuilt from it
        model_bytes = tokenizer_json.sentencepiece_model_bytes(model_path)
    elif not model_path.is_file():
        raise FileNotFoundError(
            f"no sentencepiece model at {model_path} (expected a directory holding {MODEL_FILE} "
            f"or {tokenizer_json.FILE})"
        )
    else:
        model_bytes = model_path.read_bytes()
    config: dict[str, Any] = {}
    if directory is not None:
        config = {**_read_json(directory / SPECIAL_TOKENS_FILE), **_read_json(directory / CONFIG_FILE)}
    return TokenizerFiles(
        model_path=model_path,
        model_bytes=model_bytes,
        model_max_length=_model_max_length(config),
        special=_special_tokens(config),
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(content, dict):
        raise TypeError(f"{path} must hold a JSON object, found {type(content).__name__}")
    return content


def _model_max_length(config: dict[str, Any]) -> int | None:
    value = config.get("model_max_length", DEFAULT_MODEL_MAX_LENGTH)
    if value is None or value >= _UNLIMITED_THRESHOLD:
        return None
    return int(value)


def _token_content(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _special_tokens(config: dict[str, Any]) -> SpecialTokens:
    defaults = SpecialTokens()
    strings = {}
    for field, key in _SPECIAL_KEYS.items():
        strings[field] = _token_content(config.get(key)) or getattr(defaults, field)
    return SpecialTokens(**strings, mask_lstrip=_mask_lstrip(config, strings["mask"]))


def _mask_lstrip(config: dict[str, Any], mask: str) -> bool:
    """The mask's lstrip flag from the config's AddedToken entries; the released model's True otherwise."""
    for entry in (config.get("added_tokens_decoder") or {}).values():
        if isinstance(entry, dict) and entry.get("content") == mask and "lstrip" in entry:
            return bool(entry["lstrip"])
    mask_entry = config.get("mask_token")
    if isinstance(mask_entry, dict) and "lstrip" in mask_entry:
        return bool(mask_entry["lstrip"])
    return True


def _added_token(content: str, lstrip: bool = False) -> dict[str, Any]:
    return {
        "content": content,
        "lstrip": lstrip,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def _token_names(special: SpecialTokens) -> dict[str, str]:
    """The special tokens other than <mask> under the names transformers uses (<s> is also cls)."""
    return {"bos_token": special.bos, "cls_token": special.bos, "eos_token": special.eos,
            "sep_token": special.eos, "unk_token": special.unk, "pad_token": special.pad}


def tokenizer_config(special: SpecialTokens, mask_id: int, model_max_length: int | None) -> dict[str, Any]:
    """``tokenizer_config.json`` in the layout transformers writes for XLM-R."""
    ids = special.by_id(mask_id)
    return {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": _HF_UNLIMITED if model_max_length is None else model_max_length,
        **_token_names(special),
        "mask_token": special.mask,
        "add_prefix_space": True,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(token_id): _added_token(token, lstrip=token_id == mask_id and special.mask_lstrip)
            for token_id, token in sorted(ids.items())
        },
    }


def special_tokens_map(special: SpecialTokens) -> dict[str, Any]:
    """``special_tokens_map.json`` as transformers v4 writes it."""
    return {
        **_token_names(special),
        "mask_token": {
            key: value
            for key, value in _added_token(special.mask, special.mask_lstrip).items()
            if key != "special"
        },
    }
