"""XLM-RoBERTa's tokenizer: sentencepiece segmentation, fairseq ids, numpy int32 batches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xlmr_jax.tokenization import files
from xlmr_jax.tokenization.batch_encoding import BatchEncoding
from xlmr_jax.tokenization.inputs import TextBatch, collect_id_rows, collect_ids, collect_texts
from xlmr_jax.tokenization.padding import Padding, check_buckets, padded_width, resolve_padding
from xlmr_jax.tokenization.pieces import EncodedTexts, PieceEncoder
from xlmr_jax.tokenization.ragged import Ragged, concat_rowwise
from xlmr_jax.tokenization.truncation import Truncation, WindowPlan, plan_windows, resolve_truncation
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


@dataclass(frozen=True)
class _Lengths:
    """Resolved padding/truncation settings for one call."""

    padding: Padding
    truncation: Truncation
    max_length: int | None
    budget: int | None  # tokens left for text once special tokens are counted


@dataclass(frozen=True)
class _Assembled:
    """Final rows (special tokens included) before padding."""

    ids: Ragged
    special_mask: Ragged
    offsets: Ragged | None
    sample: np.ndarray


class XLMRobertaTokenizer:
    """Tokenizer of XLM-R (base/large/XL/XXL): one ``sentencepiece.bpe.model`` and fairseq's id layout.

    Ids match sentencepiece exactly (what the model was trained on); special tokens, truncation,
    overflow windows, padding, offsets and decoding follow the ``transformers`` fast tokenizer.
    Outputs are ``int32`` numpy arrays by default.
    """

    vocab_files_names = {"vocab_file": files.MODEL_FILE}
    model_input_names = ("input_ids", "attention_mask")

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
            model_path, model_path.read_bytes(), model_max_length, special_tokens or SpecialTokens(),
            num_threads, split_special_tokens,
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

        Each file is written to a temporary name and renamed, so a crash never leaves a truncated
        file; ``transformers.AutoTokenizer.from_pretrained(directory)`` loads the result.
        """
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        special = self._vocab.special
        paths = (target / files.MODEL_FILE, target / files.CONFIG_FILE, target / files.SPECIAL_TOKENS_FILE)
        files.write_atomic(paths[0], self._model_bytes)
        files.write_json_atomic(
            paths[1], files.tokenizer_config(special, self.mask_token_id, self.model_max_length)
        )
        files.write_json_atomic(paths[2], files.special_tokens_map(special))
        return tuple(str(path) for path in paths)

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

    def build_inputs_with_special_tokens(self, ids: Sequence[int], pair_ids: Sequence[int] | None = None) -> list[int]:
        """``<s> A </s>`` or ``<s> A </s></s> B </s>``."""
        if pair_ids is None:
            return [BOS_ID, *ids, EOS_ID]
        return [BOS_ID, *ids, EOS_ID, EOS_ID, *pair_ids, EOS_ID]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 4 if pair else 2

    # -- encoding ---------------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """Token strings of ``text`` without ``<s>``/``</s>`` (special tokens in the text are kept whole)."""
        batch = collect_texts(text, None)
        pieces = self._vocab.pieces
        return [pieces[token_id] for token_id in self._pieces.encode(batch.first, False).ids.values]

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
            text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
            max_length=max_length, pad_to_multiple_of=pad_to_multiple_of, return_tensors=None,
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
        is_pair = batch.second is not None
        n_special = self.num_special_tokens_to_add(is_pair) if add_special_tokens else 0
        lengths = self._resolve_lengths(
            padding, truncation, max_length, stride, pad_to_multiple_of, buckets, n_special,
            return_overflowing_tokens,
        )
        first, second = self._encode_texts(batch, return_offsets_mapping)
        plan = plan_windows(
            first.ids.lengths, None if second is None else second.ids.lengths, lengths.truncation,
            lengths.budget, stride, return_overflowing_tokens,
        )
        assembled = self._assemble(first, second, plan, add_special_tokens)
        width = padded_width(
            assembled.ids.lengths, lengths.padding, lengths.max_length, pad_to_multiple_of, check_buckets(buckets)
        )
        return self._package(
            assembled, width, batch, return_tensors, return_attention_mask, return_token_type_ids,
            return_special_tokens_mask, return_overflowing_tokens,
        )

    def _resolve_lengths(
        self,
        padding: bool | str,
        truncation: bool | str | None,
        max_length: int | None,
        stride: int,
        pad_to_multiple_of: int | None,
        buckets: Sequence[int] | None,
        n_special: int,
        overflow: bool,
    ) -> _Lengths:
        """The reference's padding/truncation defaults, plus clear errors for impossible settings."""
        for name, value, minimum in (("max_length", max_length, 1), ("pad_to_multiple_of", pad_to_multiple_of, 1)):
            if value is not None and (not isinstance(value, (int, np.integer)) or value < minimum):
                raise ValueError(f"{name}={value!r} must be a positive int or None")
        if not isinstance(stride, (int, np.integer)) or stride < 0:
            raise ValueError(f"stride={stride!r} must be a non-negative int")
        if max_length is not None and padding is False and truncation is None:
            truncation = True  # the reference's rule: a bare max_length means "truncate to it"
        pad = resolve_padding(padding)
        if pad is Padding.DO_NOT_PAD and (pad_to_multiple_of is not None or buckets is not None):
            pad = Padding.LONGEST
        if buckets is not None and (pad is Padding.MAX_LENGTH or pad_to_multiple_of is not None):
            raise ValueError("buckets replaces padding='max_length' and pad_to_multiple_of; pass only one")
        strategy = resolve_truncation(truncation)
        if max_length is None and pad is Padding.MAX_LENGTH:
            if self.model_max_length is None:
                raise ValueError("padding='max_length' needs max_length: this tokenizer has no model_max_length")
            max_length = self.model_max_length
        if max_length is None and strategy is not Truncation.DO_NOT_TRUNCATE:
            if self.model_max_length is None:
                strategy = Truncation.DO_NOT_TRUNCATE
            else:
                max_length = self.model_max_length
        budget = None
        if strategy is not Truncation.DO_NOT_TRUNCATE:
            budget = self._budget(max_length, n_special, stride, overflow)
            if pad is not Padding.DO_NOT_PAD and pad_to_multiple_of and max_length % pad_to_multiple_of:
                raise ValueError(
                    f"max_length={max_length} is not a multiple of pad_to_multiple_of={pad_to_multiple_of}; "
                    f"truncated rows would not fill the padded width"
                )
        return _Lengths(pad, strategy, max_length, budget)

    @staticmethod
    def _budget(max_length: int, n_special: int, stride: int, overflow: bool) -> int:
        if max_length < n_special:
            raise ValueError(
                f"max_length={max_length} is smaller than the {n_special} special tokens every row needs "
                f"(<s> ... </s>{'</s> ... </s>' if n_special == 4 else ''}); use max_length >= {n_special}"
            )
        budget = max_length - n_special
        if overflow and stride >= budget:
            raise ValueError(
                f"stride={stride} must be smaller than the {budget} text tokens that fit in "
                f"max_length={max_length} after {n_special} special tokens"
            )
        return budget

    def _encode_texts(self, batch: TextBatch, with_offsets: bool) -> tuple[EncodedTexts, EncodedTexts | None]:
        """Both sides of every pair go through one sentencepiece batch call (one thread pool)."""
        texts = batch.first if batch.second is None else batch.first + batch.second
        encoded = self._pieces.encode(texts, with_offsets)
        if batch.second is None:
            return encoded, None
        n = len(batch.first)
        halves = []
        for rows in (np.arange(n), np.arange(n, 2 * n)):
            offsets = None if encoded.offsets is None else encoded.offsets.take_rows(rows)
            halves.append(EncodedTexts(encoded.ids.take_rows(rows), offsets))
        return halves[0], halves[1]

    def _assemble(
        self, first: EncodedTexts, second: EncodedTexts | None, plan: WindowPlan, add_special_tokens: bool
    ) -> _Assembled:
        """Cut the planned windows and wrap them as ``<s> A </s>`` / ``<s> A </s></s> B </s>``."""
        windows = [_windows(first, plan.sample, plan.first_start, plan.first_stop)]
        if second is not None:
            windows.append(_windows(second, plan.sample, plan.second_start, plan.second_stop))
        n_rows = len(plan.sample)
        with_offsets = first.offsets is not None

        def special(token_id: int) -> tuple[Ragged, Ragged, Ragged | None]:
            if not add_special_tokens:
                return Ragged.empty_rows(n_rows), Ragged.empty_rows(n_rows), (
                    Ragged.empty_rows(n_rows, (2,)) if with_offsets else None)
            offsets = Ragged.constant((0, 0), n_rows) if with_offsets else None
            return Ragged.constant(token_id, n_rows), Ragged.constant(1, n_rows), offsets

        parts = [special(BOS_ID), windows[0], special(EOS_ID)]
        if second is not None:
            parts += [special(EOS_ID), windows[1], special(EOS_ID)]
        ids = concat_rowwise([part[0] for part in parts])
        special_mask = concat_rowwise([part[1] for part in parts])
        offsets = concat_rowwise([part[2] for part in parts]) if with_offsets else None
        return _Assembled(ids, special_mask, offsets, plan.sample)

    def _package(
        self,
        assembled: _Assembled,
        width: int | None,
        batch: TextBatch,
        return_tensors: str | None,
        return_attention_mask: bool,
        return_token_type_ids: bool,
        return_special_tokens_mask: bool,
        return_overflowing_tokens: bool,
    ) -> BatchEncoding:
        """Pad and convert to arrays or lists, in the reference's key order."""
        lengths = assembled.ids.lengths
        fields: dict[str, tuple[Ragged, Any]] = {"input_ids": (assembled.ids, PAD_ID)}
        if return_token_type_ids:
            fields["token_type_ids"] = (Ragged(np.zeros_like(assembled.ids.values), lengths), 0)
        if return_attention_mask:
            fields["attention_mask"] = (Ragged(np.ones_like(assembled.ids.values), lengths), 0)
        if return_special_tokens_mask:
            fields["special_tokens_mask"] = (assembled.special_mask, 1)
        if assembled.offsets is not None:
            fields["offset_mapping"] = (assembled.offsets, (0, 0))
        if return_tensors == "np":
            width = _dense_width(lengths, width)
            output = {name: ragged.to_dense(width, pad) for name, (ragged, pad) in fields.items()}
            if return_overflowing_tokens:
                output["overflow_to_sample_mapping"] = assembled.sample.astype(np.int32)
            return BatchEncoding(output)
        output = {name: _padded_lists(ragged, width, pad) for name, (ragged, pad) in fields.items()}
        if return_overflowing_tokens:
            output["overflow_to_sample_mapping"] = assembled.sample.tolist()
        elif not batch.batched:
            output = {name: rows[0] for name, rows in output.items()}
        return BatchEncoding(output)

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
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in collect_id_rows(sequences)]


def _windows(encoded: EncodedTexts, rows: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> tuple:
    ids = encoded.ids.windows(rows, starts, stops)
    mask = Ragged(np.zeros_like(ids.values), ids.lengths)
    offsets = None if encoded.offsets is None else encoded.offsets.windows(rows, starts, stops)
    return ids, mask, offsets


def _dense_width(lengths: np.ndarray, width: int | None) -> int:
    """Width of the numpy output; rows must all fit (padding) or all be equally long."""
    longest = int(lengths.max()) if len(lengths) else 0
    if width is None:
        if len(lengths) and int(lengths.min()) != longest:
            raise ValueError(
                f"rows have different lengths ({int(lengths.min())} to {longest} tokens) and no padding was "
                f"asked for; pass padding=True (or buckets=...) for an array, or return_tensors=None for lists"
            )
        return longest
    if longest > width:
        raise ValueError(
            f"a row has {longest} tokens, more than the padded width {width}; pass truncation=True "
            f"(padding='max_length' does not truncate on its own)"
        )
    return width


def _padded_lists(ragged: Ragged, width: int | None, pad: Any) -> list[list]:
    rows = ragged.to_lists()
    if width is None:
        return rows
    pad_item = tuple(pad) if isinstance(pad, tuple) else pad
    return [row + [pad_item] * (width - len(row)) if len(row) < width else row for row in rows]
