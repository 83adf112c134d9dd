"""A checkpoint that ships only `tokenizer.json` (the `tokenizers` library's file) and no
`sentencepiece.bpe.model`.

XLM-R's `tokenizer.json` is its sentencepiece model written out: a Unigram model whose vocabulary
is the fairseq id layout (`<s> <pad> </s> <unk>`, sentencepiece pieces k at k + 1, `<mask>` last),
with each piece's score, and the `Precompiled` normaliser carrying sentencepiece's own
`precompiled_charsmap`. So the sentencepiece model is rebuilt from it exactly (pieces, scores,
normaliser) and the one encoder of this package runs on it: the same ids, offsets and decoding as
from the `.model` file. The `tokenizers` library is not needed to read the JSON, and running
text through it would give the Rust segmentation, which differs from sentencepiece (README).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as model_pb2

FILE = "tokenizer.json"
_LEADING = ("<s>", "<pad>", "</s>", "<unk>")


def sentencepiece_model_bytes(path: Path) -> bytes:
    """The serialized sentencepiece model described by the `tokenizer.json` at `path`."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable tokenizer.json ({err})") from None
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict) or model.get("type") != "Unigram":
        raise ValueError(f"{path}: expected a Unigram model (XLM-R's), got {_kind(model)}")
    vocab = model.get("vocab")
    if (not isinstance(vocab, list) or len(vocab) < 6
            or [entry[0] for entry in vocab[:4]] != list(_LEADING) or vocab[-1][0] != "<mask>"):
        raise ValueError(f"{path}: the vocabulary does not have XLM-R's layout "
                         f"({', '.join(_LEADING)} first, <mask> last)")
    charsmap = _precompiled_charsmap(spec.get("normalizer"), path)

    proto = model_pb2.ModelProto()
    proto.trainer_spec.model_type = model_pb2.TrainerSpec.UNIGRAM
    proto.trainer_spec.vocab_size = len(vocab) - 2  # fairseq adds <pad> and <mask>
    for piece, kind in (("<unk>", model_pb2.ModelProto.SentencePiece.UNKNOWN),
                        ("<s>", model_pb2.ModelProto.SentencePiece.CONTROL),
                        ("</s>", model_pb2.ModelProto.SentencePiece.CONTROL)):
        proto.pieces.add(piece=piece, score=0.0, type=kind)
    for piece, score in vocab[4:-1]:
        proto.pieces.add(piece=piece, score=float(score), type=model_pb2.ModelProto.SentencePiece.NORMAL)
    proto.normalizer_spec.name = "nmt_nfkc"
    proto.normalizer_spec.precompiled_charsmap = charsmap
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = True
    proto.normalizer_spec.escape_whitespaces = True
    return proto.SerializeToString()


def _precompiled_charsmap(normalizer, path: Path) -> bytes:
    """Sentencepiece's normalisation table, from the `Precompiled` normaliser (alone or in a sequence)."""
    found = [normalizer] if isinstance(normalizer, dict) else []
    if isinstance(normalizer, dict) and normalizer.get("type") == "Sequence":
        found = [n for n in normalizer.get("normalizers", []) if isinstance(n, dict)]
    for candidate in found:
        if candidate.get("type") == "Precompiled" and candidate.get("precompiled_charsmap"):
            return base64.b64decode(candidate["precompiled_charsmap"])
    raise ValueError(f"{path}: no Precompiled normaliser (sentencepiece's nmt_nfkc table), got {_kind(normalizer)}")


def _kind(value) -> str:
    return repr(value.get("type")) if isinstance(value, dict) else type(value).__name__
