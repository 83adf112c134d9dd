"""XLM-RoBERTa's tokenizer: sentencepiece segmentation, fairseq ids, numpy int32 batches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from xlmr_jax.staging import staged_directory
from xlmr_jax.tokenization import files
from xlmr_jax.tokenization.assembly import OutputRequest, assemble, package
from xlmr_jax.tokenization.batch_encoding import BatchEncoding
from xlmr_jax.tokenization.inputs import TextBatch, collect_id_rows, collect_ids, collect_texts
from xlmr_jax.tokenization.lengths import LengthRequest, resolve_lengths
from xlmr_jax.tokenization.padding import padded_width
from xlmr_jax.tokenization.pieces import EncodedTexts, PieceEncoder
from xlmr_jax.tokenization.truncation import plan_windows
from xlmr_jax.tokenization.vocab import (
    BOS_ID,
    EOS_ID,
    META_SPACE,
    PAD_ID,
    UNK_ID,
    FairseqVocab,
    SpecialTokens,
)

_RETURN_TENSORS = ("np", None)


class XLMRobertaTokenizer:
    """Tokenizer of XLM-R (base/large/XL/XXL): one ``sentencepiece.bpe.model`` and fairseq's id layout.

    Ids match sentencepiece exactly (what the model was trained on); special tokens, truncation,
    overflow windows, padding, offsets and decoding follow the ``transformers`` fast tokenizer.
    Outputs are ``int32`` numpy arrays by default.
    """

    vocab_files_names: ClassVar[dict[str, str]] = {"vocab_file": files.MODEL_FILE}
    model_input_names: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        *,
        model_max_length: int | None = files.DEFAULT_MODEL_MAX_LENGTH,
        special_tokens: SpecialTokens | None = None,
        num_threads: int | None = None,
        split_special_tokens: bool = False,
    ):
        """Load ``vocab_file`` (a sentencepiece model).

        Args:
            model_max_length: default ``max_length`` for truncation / ``padding="max_length"``;
                None means unlimited.
            special_tokens: special token strings (XLM-R's defaults when None).
            num_threads: sentencepiece encoder threads (default: the CPUs this process may use).
            split_special_tokens: if True, "<mask>" etc. written in the text are ordinary text.
        """
        model_path = Path(vocab_file)
        if not model_path.is_file():
            raise FileNotFoundError(f"no sentencepiece model at {model_path}")
        self._init_from_bytes(
            model_path,
            model_path.read_bytes(),
            model_max_length,
            special_tokens or SpecialTokens(),
            num_threads,
            split_special_tokens,
        )

    def _init_from_bytes(
        self,
        model_path: Path,
        model_bytes: bytes,
        model_max_length: int | None,
        special: SpecialTokens,
        num_threads: int | None,
        split_special_tokens: bool,
    ) -> None:
        self.vocab_file = str(model_path)
        self._model_bytes = model_bytes
        self._processor = files.load_processor(model_bytes, model_path)
        self.model_max_length = model_max_length
        self._vocab = FairseqVocab(self._processor, special)
        threads = num_threads if num_threads is not None else len(os.sched_getaffinity(0))
        self._pieces = PieceEncoder(self._processor, self._vocab, max(1, threads), split_special_tokens)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> XLMRobertaTokenizer:
        """Load from a directory holding ``sentencepiece.bpe.model`` (or from the model file itself).

        ``tokenizer_config.json`` / ``special_tokens_map.json`` are read when present (``model_max_length``,
        special token strings, the mask's ``lstrip``); keyword ``overrides`` win over them.
        """
        found = files.read_tokenizer_dir(path)
        tokenizer = cls.__new__(cls)
        settings = {
            "model_max_length": found.model_max_length,
            "special": found.special,
            "num_threads": None,
            "split_special_tokens": False,
        }
        if "special_tokens" in overrides:
            overrides["special"] = overrides.pop("special_tokens")
        unknown = set(overrides) - set(settings)
        if unknown:
            raise TypeError(f"from_pretrained got unexpected keyword(s) {sorted(unknown)}")
        settings.update(overrides)
        tokenizer._init_from_bytes(found.model_path, found.model_bytes, **settings)
        return tokenizer

    def save_pretrained(self, directory: str | os.PathLike) -> tuple[str, ...]:
        """Write ``sentencepiece.bpe.model``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

        Into an existing directory (a model's, say) each file is written to a temporary name and
        renamed, so a crash never leaves a truncated file; a new directory is built in a staging
        directory and renamed into place whole, so a crash leaves no directory at all.
        ``transformers.AutoTokenizer.from_pretrained(directory)`` loads the result.
        """
        target = Path(os.path.abspath(directory))
        if not target.exists():
            with staged_directory(target) as staging:
                self._write_files(Path(staging))
        else:
            self._write_files(target)
        return tuple(str(target / name) for name in (files.MODEL_FILE, files.CONFIG_FILE, files.SPECIAL_TOKENS_FILE))

    def _write_files(self, target: Path) -> None:
        special = self._vocab.special
        files.write_atomic(target / files.MODEL_FILE, self._model_bytes)
        files.write_json_atomic(
            target / files.CONFIG_FILE, files.tokenizer_config(special, self.mask_token_id, self.model_max_length)
        )
        files.write_json_atomic(target / files.SPECIAL_TOKENS_FILE, files.special_tokens_map(special))

    # -- vocabulary ------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids: sentencepiece pieces + 2 (``<pad>`` and ``<mask>``)."""
        return self._vocab.size

    def __len__(self) -> int:
        return self._vocab.size

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_file={self.vocab_file!r}, vocab_size={self.vocab_size}, "
            f"model_max_length={self.model_max_length})"
        )

    bos_token_id = cls_token_id = BOS_ID
    pad_token_id = PAD_ID
    eos_token_id = sep_token_id = EOS_ID
    unk_token_id = UNK_ID

    @property
    def mask_token_id(self) -> int:
        return self._vocab.mask_id

    @property
    def bos_token(self) -> str:
        return self._vocab.special.bos

    cls_token = bos_token

    @property
    def eos_token(self) -> str:
        return self._vocab.special.eos

    sep_token = eos_token

    @property
    def pad_token(self) -> str:
        return self._vocab.special.pad

    @property
    def unk_token(self) -> str:
        return self._vocab.special.unk

    @property
    def mask_token(self) -> str:
        return self._vocab.special.mask

    @property
    def all_special_ids(self) -> list[int]:
        """Special ids in the reference's order (bos, eos, unk, pad, mask)."""
        return [BOS_ID, EOS_ID, UNK_ID, PAD_ID, self.mask_token_id]

    @property
    def all_special_tokens(self) -> list[str]:
        return self.convert_ids_to_tokens(self.all_special_ids)

    def get_vocab(self) -> dict[str, int]:
        """Token string -> id for every id."""
        return {piece: token_id for token_id, piece in enumerate(self._vocab.pieces)}

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Id of a token string (or a list of them); unknown strings give ``unk_token_id``."""
        if isinstance(tokens, str):
            return self._vocab.token_to_id(tokens)
        return [self._vocab.token_to_id(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        """Token string of an id (or a list of them); raises ValueError for ids outside the vocabulary."""
        if isinstance(ids, (int, np.integer)):
            return self._vocab.id_to_token(int(ids))
        pieces = self._vocab.pieces
        return [pieces[token_id] for token_id in self._vocab.check_ids(collect_ids(ids), "ids")]

    def build_inputs_with_special_tokens(
        self, ids: Sequence[int], pair_ids: Sequence[int] | None = None
    ) -> list[int]:
        """``<s> A </s>`` or ``<s> A </s></s> B </s>``."""
        if pair_ids is None:
            return [BOS_ID, *ids, EOS_ID]
        return [BOS_ID, *ids, EOS_ID, EOS_ID, *pair_ids, EOS_ID]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 4 if pair else 2

    # -- encoding ---------------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """Token strings of ``text`` without ``<s>``/``</s>`` (special tokens in the text are kept whole)."""
        if not isinstance(text, str):
            raise TypeError(f"tokenize takes one str, got a {type(text).__name__}; use __call__ for batches")
        pieces = self._vocab.pieces
        return [pieces[token_id] for token_id in self._pieces.encode([text], False).ids.values]

    def encode(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
    ) -> list[int] | list[list[int]]:
        """Ids as a Python list (a list of lists for a batch), like the reference's ``encode``."""
        encoding = self(
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            return_tensors=None,
            return_attention_mask=False,
        )
        return encoding["input_ids"]

    def __call__(
        self,
        text: str | Sequence[str] | Sequence[tuple[str, str]],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        buckets: Sequence[int] | None = None,
        return_tensors: str | None = "np",
        return_attention_mask: bool = True,
        return_token_type_ids: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_overflowing_tokens: bool = False,
    ) -> BatchEncoding:
        """Tokenize one text, a batch of texts, or pairs (``text_pair``, or a list of 2-tuples).

        Empty text gives ``<s></s>``. Arguments follow ``transformers`` (see the README for the few
        deliberate differences):

        Args:
            padding: False, True / "longest", or "max_length" (to ``max_length``, else ``model_max_length``).
            truncation: True / "longest_first", "only_first", "only_second", False. None: truncate only
                when ``max_length`` is given without padding (the reference's rule).
            max_length: total length including special tokens; at least 2 (4 for pairs) when truncating.
            stride: tokens shared by consecutive overflow windows.
            pad_to_multiple_of: round the padded width up to a multiple of this (implies padding).
            buckets: pad to the smallest of these widths that fits the batch, so jitted functions see
                a few fixed shapes (implies padding="longest"; ValueError if nothing fits).
            return_tensors: "np" for ``int32`` arrays with a batch axis, None for Python lists.
            return_offsets_mapping: ``(start, end)`` character spans into the original text; ``(0, 0)``
                for ``<s>``, ``</s>`` and padding.
            return_overflowing_tokens: keep every window of truncated text (sliding windows over long
                documents for QA), with ``overflow_to_sample_mapping`` giving each row's example.
        """
        if return_tensors not in _RETURN_TENSORS:
            raise ValueError(f"return_tensors={return_tensors!r} must be 'np' or None")
        batch = collect_texts(text, text_pair)
        n_special = self.num_special_tokens_to_add(batch.second is not None) if add_special_tokens else 0
        request = LengthRequest(
            padding, truncation, max_length, stride, pad_to_multiple_of, buckets, return_overflowing_tokens
        )
        lengths = resolve_lengths(request, self.model_max_length, n_special)
        first, second = self._encode_texts(batch, return_offsets_mapping)
        second_lengths = None if second is None else second.ids.lengths
        plan = plan_windows(
            first.ids.lengths,
            second_lengths,
            lengths.truncation,
            lengths.budget,
            stride,
            return_overflowing_tokens,
        )
        assembled = assemble(first, second, plan, add_special_tokens)
        width = padded_width(
            assembled.ids.lengths,
            lengths.padding,
            lengths.max_length,
            lengths.pad_to_multiple_of,
            lengths.buckets,
        )
        output = OutputRequest(
            return_tensors=return_tensors,
            attention_mask=return_attention_mask,
            token_type_ids=return_token_type_ids,
            special_tokens_mask=return_special_tokens_mask,
            overflow=return_overflowing_tokens,
            batched=batch.batched,
        )
        return package(assembled, width, output)

    def _encode_texts(self, batch: TextBatch, with_offsets: bool) -> tuple[EncodedTexts, EncodedTexts | None]:
        """Both sides of every pair go through one sentencepiece batch call (one thread pool)."""
        texts = batch.first if batch.second is None else batch.first + batch.second
        try:
            encoded = self._pieces.encode(texts, with_offsets)
        except (UnicodeEncodeError, TypeError, RuntimeError):
            # sentencepiece rejects strings that are not valid UTF-8 (lone surrogates) with one of these
            # errors, depending on the entry point; name the offending text, or re-raise if it is not that.
            _raise_for_invalid_unicode(batch)
            raise
        if batch.second is None:
            return encoded, None
        n = len(batch.first)
        halves = []
        for rows in (np.arange(n), np.arange(n, 2 * n)):
            offsets = None if encoded.offsets is None else encoded.offsets.take_rows(rows)
            halves.append(EncodedTexts(encoded.ids.take_rows(rows), offsets))
        return halves[0], halves[1]

    # -- decoding ---------------------------------------------------------------------------------------

    def decode(self, token_ids: Any, skip_special_tokens: bool = False) -> str:
        """Text of a sequence of ids (list, numpy or jax array), joined the way the reference does.

        Pieces are concatenated with "▁" read as a space (the first token loses its "▁"); special
        tokens appear as their strings unless ``skip_special_tokens``. Ids outside the vocabulary
        raise ValueError (the reference silently drops them).
        """
        ids = self._vocab.check_ids(collect_ids(token_ids), "token_ids")
        pieces = self._vocab.pieces
        if skip_special_tokens:
            special_ids = set(self.all_special_ids)
            tokens = [pieces[token_id] for token_id in ids if token_id not in special_ids]
        else:
            tokens = [pieces[token_id] for token_id in ids]
        if not tokens:
            return ""
        return tokens[0].replace(META_SPACE, "") + "".join(tokens[1:]).replace(META_SPACE, " ")

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        """``decode`` for every row of a list of id lists or a 2-D array."""
        return [
            self.decode(row, skip_special_tokens=skip_special_tokens) for row in collect_id_rows(sequences)
        ]


def _raise_for_invalid_unicode(batch: TextBatch) -> None:
    named = [(f"text[{index}]", text) for index, text in enumerate(batch.first)]
    named += [(f"text_pair[{index}]", text) for index, text in enumerate(batch.second or [])]
    for name, text in named:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"{name} is not valid Unicode: lone surrogate {text[error.start]!r} at position "
                f"{error.start} (repair it e.g. with text.encode('utf-8', 'replace').decode('utf-8'))"
            ) from error
