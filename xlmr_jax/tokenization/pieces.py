"""Text -> fairseq piece ids (and character offsets) through sentencepiece's batch encoder.

Ids come from sentencepiece itself, the segmentation XLM-R was trained on (fairseq preprocessed its
data with the same ``sentencepiece.bpe.model``). Special token strings written in the text are cut
out first, like the reference does, and each stretch of text between them is encoded on its own.

Offsets follow the reference fast tokenizer's conventions (spans in the ORIGINAL text, whitespace
excluded, a lone "▁" piece spans the first character of the word it starts) but are computed from
sentencepiece's own alignment, which also tracks characters the normaliser removes or merges.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import sentencepiece as spm

from xlmr_jax.tokenization.ragged import Ragged
from xlmr_jax.tokenization.vocab import META_SPACE, FairseqVocab, SpecialTokens

# Rust's `char::is_whitespace` (Unicode White_Space): what the reference strips left of "<mask>".
_WHITE_SPACE_CLASS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Categories holding every character a sentencepiece normaliser may turn into a space or delete.
_DROPPABLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
# Smaller batches are encoded text by text on the calling thread.
_THREADED_BATCH = 32


@dataclass(frozen=True)
class EncodedTexts:
    """Per input text: fairseq ids and, when asked for, ``(start, end)`` character offsets."""

    ids: Ragged
    offsets: Ragged | None


@dataclass(frozen=True)
class _SpecialMatch:
    token_id: int
    start: int
    end: int


@cache
def _droppable_candidates() -> tuple[str, ...]:
    """Characters worth probing for "normalises to a space or to nothing" (scanned once per process)."""
    candidates = [
        chr(code)
        for code in range(sys.maxunicode + 1)
        if not 0xD800 <= code < 0xE000 and unicodedata.category(chr(code)) in _DROPPABLE_CATEGORIES
    ]
    # A literal "▁" in the input is whitespace to sentencepiece too.
    return (*candidates, META_SPACE)


class PieceEncoder:
    """Splits out special tokens, runs sentencepiece on batches and aligns pieces to the text."""

    def __init__(
        self,
        processor: spm.SentencePieceProcessor,
        vocab: FairseqVocab,
        num_threads: int,
        split_special_tokens: bool,
    ):
        self._processor = processor
        self._vocab = vocab
        self._num_threads = num_threads
        self._split_special_tokens = split_special_tokens
        self._special_pattern = _special_token_pattern(vocab.special, vocab.id_by_special)
        self._special_first_chars = frozenset(token[0] for token in vocab.id_by_special)
        self._bare_meta_by_id: np.ndarray | None = None
        self._droppable_table: np.ndarray | None = None

    # -- special tokens in the text ------------------------------------------------------------------

    def _may_hold_special(self, text: str) -> bool:
        # Cheap pre-check: every special token starts with "<", so most texts skip the regex.
        return any(char in text for char in self._special_first_chars)

    def _split_specials(self, text: str) -> list[str | _SpecialMatch]:
        """Text stretches and special-token matches in order; a mask match includes its lstrip."""
        parts: list[str | _SpecialMatch] = []
        cursor = 0
        for match in self._special_pattern.finditer(text):
            if match.start() > cursor:
                parts.append(text[cursor : match.start()])
            token = match.group(match.lastindex)
            parts.append(_SpecialMatch(self._vocab.id_by_special[token], match.start(), match.end()))
            cursor = match.end()
        if cursor < len(text) or not parts:
            parts.append(text[cursor:])
        return parts

    # -- batch encoding --------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], with_offsets: bool) -> EncodedTexts:
        """Encode every text; rows of the result follow ``texts``."""
        if self._split_special_tokens or not self._may_hold_special("\n".join(texts)):
            # Fast path, one C-level scan: no text can hold a special token.
            return self._encode_segments(list(texts), [0] * len(texts), with_offsets)
        segments: list[str] = []
        segment_bases: list[int] = []
        # Per text, its parts in order: an index into `segments`, or a special token found in the text.
        plans: list[list[int | _SpecialMatch]] = []
        any_special = False
        for text in texts:
            if not self._may_hold_special(text):
                plans.append([len(segments)])
                segments.append(text)
                segment_bases.append(0)
                continue
            plan: list[int | _SpecialMatch] = []
            cursor = 0
            for part in self._split_specials(text):
                if isinstance(part, _SpecialMatch):
                    any_special = True
                    plan.append(part)
                    cursor = part.end
                else:
                    plan.append(len(segments))
                    segments.append(part)
                    segment_bases.append(cursor)
                    cursor += len(part)
            plans.append(plan)

        encoded = self._encode_segments(segments, segment_bases, with_offsets)
        if not any_special:
            return encoded
        return self._splice_specials(encoded, plans, len(segments))

    def _run_sentencepiece(self, segments: list[str], return_type: type | str) -> list:
        if len(segments) < _THREADED_BATCH:
            # Starting sentencepiece's worker threads costs more than encoding a few texts.
            return [self._processor.encode(segment, return_type=return_type) for segment in segments]
        return self._processor.encode(segments, return_type=return_type, num_threads=self._num_threads)

    def _encode_segments(self, segments: list[str], bases: list[int], with_offsets: bool) -> EncodedTexts:
        if not with_offsets:
            rows = self._run_sentencepiece(segments, int)
            spm_ids = Ragged.from_rows(rows)
            return EncodedTexts(Ragged(self._vocab.spm_to_fairseq(spm_ids.values), spm_ids.lengths), None)
        results = self._run_sentencepiece(segments, "offset_mapping")
        spm_ids = Ragged.from_rows([result["ids"] for result in results])
        raw_offsets = Ragged.from_pair_rows([result["offsets"] for result in results])
        ids = Ragged(self._vocab.spm_to_fairseq(spm_ids.values), spm_ids.lengths)
        offsets = self._align_offsets(segments, bases, ids, raw_offsets)
        return EncodedTexts(ids, offsets)

    def _splice_specials(self, encoded: EncodedTexts, plans: list, n_segments: int) -> EncodedTexts:
        """Interleave in-text special tokens with the encoded stretches between them."""
        specials = [part for plan in plans for part in plan if isinstance(part, _SpecialMatch)]
        special_ids = np.array([match.token_id for match in specials], dtype=np.int32)
        source_ids = _append_single_item_rows(encoded.ids, special_ids)
        order: list[int] = []
        group_sizes: list[int] = []
        next_special = n_segments
        for plan in plans:
            for part in plan:
                if isinstance(part, _SpecialMatch):
                    order.append(next_special)
                    next_special += 1
                else:
                    order.append(part)
            group_sizes.append(len(plan))
        order_array = np.asarray(order, dtype=np.int64)
        sizes = np.asarray(group_sizes, dtype=np.int64)
        ids = source_ids.take_rows(order_array).merge_consecutive(sizes)
        offsets = None
        if encoded.offsets is not None:
            spans = np.array([(match.start, match.end) for match in specials], dtype=np.int32).reshape(-1, 2)
            source_offsets = _append_single_item_rows(encoded.offsets, spans)
            offsets = source_offsets.take_rows(order_array).merge_consecutive(sizes)
        return EncodedTexts(ids, offsets)

    # -- offsets ------------------------------------------------------------------------------------------

    def _droppable(self) -> np.ndarray:
        """Boolean table over code points: True where this model's normaliser yields a space or nothing."""
        if self._droppable_table is None:
            candidates = _droppable_candidates()
            normalized = self._processor.normalize([f"a{char}b" for char in candidates])
            table = np.zeros(sys.maxunicode + 1, dtype=bool)
            for char, result in zip(candidates, normalized, strict=True):
                if result in ("\u2581a\u2581b", "\u2581ab"):
                    table[ord(char)] = True
            self._droppable_table = table
        return self._droppable_table

    def _bare_meta(self) -> np.ndarray:
        """Boolean per fairseq id: the piece is only "▁" characters (a word-start marker)."""
        if self._bare_meta_by_id is None:
            self._bare_meta_by_id = np.array(
                [bool(piece) and not piece.strip(META_SPACE) for piece in self._vocab.pieces], dtype=bool
            )
            self._bare_meta_by_id[list(self._vocab.special_by_id)] = False
        return self._bare_meta_by_id

    def _align_offsets(self, segments: list[str], bases: list[int], ids: Ragged, raw: Ragged) -> Ragged:
        """Turn sentencepiece's piece spans into reference-style spans, vectorised over the batch.

        sentencepiece attaches the whitespace before a word, and characters the normaliser deletes,
        to neighbouring pieces; the reference excludes both. So: trim droppable characters at both
        ends, give pieces expanded from one character (e.g. "ﬁ" -> "f" "i") that character, and give
        a lone "▁" the first character of the following piece.
        """
        if not len(raw.values):
            return raw
        joined = "".join(segments)
        codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        keep = ~self._droppable()[codes]
        n_chars = len(codes)
        # next_kept[i]: first kept character at or after i; prev_kept_end[i]: one past the last kept
        # character before i. Both over the concatenated segments; clamping to the piece's own span
        # below keeps a search from leaking into a neighbouring segment.
        kept_positions = np.flatnonzero(keep)
        next_kept = np.full(n_chars + 1, n_chars, dtype=np.int64)
        next_kept[kept_positions] = kept_positions
        next_kept = np.minimum.accumulate(next_kept[::-1])[::-1]
        prev_kept_end = np.zeros(n_chars + 1, dtype=np.int64)
        prev_kept_end[kept_positions + 1] = kept_positions + 1
        prev_kept_end = np.maximum.accumulate(prev_kept_end)

        segment_lengths = np.fromiter(map(len, segments), dtype=np.int64, count=len(segments))
        segment_starts = np.cumsum(segment_lengths) - segment_lengths
        piece_segment = np.repeat(np.arange(len(segments)), raw.lengths)
        shift = segment_starts[piece_segment]
        begin = raw.values[:, 0].astype(np.int64) + shift
        end = raw.values[:, 1].astype(np.int64) + shift

        begin = np.minimum(next_kept[begin], end)
        end = np.maximum(prev_kept_end[end], begin)
        bare = self._bare_meta()[ids.values]
        # A non-empty piece with an empty span was expanded from the character at `begin`.
        expanded = (begin == end) & ~bare & (begin < n_chars)
        end[expanded] = begin[expanded] + 1
        # A lone "▁" marks the start of the next piece in the same segment.
        next_in_segment = np.zeros(len(begin), dtype=bool)
        next_in_segment[:-1] = piece_segment[1:] == piece_segment[:-1]
        lone = np.flatnonzero(bare & next_in_segment)
        begin[lone] = begin[lone + 1]
        end[lone] = begin[lone + 1] + 1

        text_base = np.asarray(bases, dtype=np.int64)[piece_segment] - shift
        spans = np.stack([begin + text_base, end + text_base], axis=1).astype(np.int32)
        return Ragged(spans, raw.lengths)


def _special_token_pattern(special: SpecialTokens, id_by_special: dict[str, int]) -> re.Pattern[str]:
    """One regex for every special token; longest first so no token shadows a longer one."""
    alternatives = []
    for token in sorted(id_by_special, key=len, reverse=True):
        lstrip = f"[{_WHITE_SPACE_CLASS}]*" if token == special.mask and special.mask_lstrip else ""
        alternatives.append(f"{lstrip}({re.escape(token)})")
    # Each alternative has one group, the token itself: `match.group(match.lastindex)`.
    return re.compile("|".join(alternatives))


def _append_single_item_rows(ragged: Ragged, items: np.ndarray) -> Ragged:
    """``ragged`` followed by one extra row per entry of ``items``."""
    values = np.concatenate([ragged.values, items.astype(ragged.values.dtype)])
    lengths = np.concatenate([ragged.lengths, np.ones(len(items), dtype=np.int64)])
    return Ragged(values, lengths)
