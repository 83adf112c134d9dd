"""The fairseq id layout of XLM-RoBERTa on top of a sentencepiece model.

fairseq built XLM-R's dictionary by prepending ``<s> <pad> </s> <unk>`` to the sentencepiece
pieces and appending ``<mask>``. sentencepiece's own first three ids (``<unk>``, ``<s>``, ``</s>``)
collapse onto the fairseq specials, so piece ``k`` of the sentencepiece model has id ``k + 1``,
sentencepiece's unknown id 0 becomes 3 and the mask is the last id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import sentencepiece as spm

BOS_ID = 0
PAD_ID = 1
EOS_ID = 2
UNK_ID = 3
# fairseq id = sentencepiece id + FAIRSEQ_OFFSET for every ordinary piece.
FAIRSEQ_OFFSET = 1
# sentencepiece reserves ids 0..2 for <unk>, <s>, </s>; ordinary pieces start at 3.
FIRST_ORDINARY_SPM_ID = 3
SPM_UNK_ID = 0

# sentencepiece's whitespace marker ("▁", U+2581).
META_SPACE = "\u2581"


@dataclass(frozen=True)
class SpecialTokens:
    """The strings of XLM-R's special tokens; ``cls``/``sep`` are aliases of ``bos``/``eos``."""

    bos: str = "<s>"
    pad: str = "<pad>"
    eos: str = "</s>"
    unk: str = "<unk>"
    mask: str = "<mask>"
    # The released tokenizer strips whitespace left of the mask, so "a <mask>" and "a<mask>" agree.
    mask_lstrip: bool = True

    def by_id(self, mask_id: int) -> dict[int, str]:
        """Special token strings keyed by their fairseq id."""
        return {BOS_ID: self.bos, PAD_ID: self.pad, EOS_ID: self.eos, UNK_ID: self.unk, mask_id: self.mask}


class FairseqVocab:
    """Maps between fairseq ids, sentencepiece ids and token strings."""

    def __init__(self, processor: spm.SentencePieceProcessor, special: SpecialTokens):
        self._processor = processor
        self.special = special
        self.spm_size = processor.get_piece_size()
        # fairseq: 4 specials + the spm pieces from id 3 on + <mask>.
        self.mask_id = self.spm_size + FAIRSEQ_OFFSET
        self.size = self.spm_size + 2
        self.special_by_id = special.by_id(self.mask_id)
        self.id_by_special = {token: token_id for token_id, token in self.special_by_id.items()}
        self._pieces: list[str] | None = None

    @property
    def pieces(self) -> list[str]:
        """Token string of every fairseq id (built on first use: a few ms for the 250k released vocab)."""
        if self._pieces is None:
            spm_pieces = self._processor.id_to_piece(list(range(FIRST_ORDINARY_SPM_ID, self.spm_size)))
            specials = self.special_by_id
            self._pieces = [specials[i] for i in range(FIRST_ORDINARY_SPM_ID + FAIRSEQ_OFFSET)]
            self._pieces += spm_pieces
            self._pieces.append(specials[self.mask_id])
        return self._pieces

    def spm_to_fairseq(self, spm_ids: np.ndarray) -> np.ndarray:
        """Vectorised id shift; sentencepiece's unknown id becomes fairseq's ``<unk>``."""
        fairseq_ids = spm_ids.astype(np.int32) + FAIRSEQ_OFFSET
        fairseq_ids[spm_ids == SPM_UNK_ID] = UNK_ID
        return fairseq_ids

    def token_to_id(self, token: str) -> int:
        """Id of a token string; unknown strings map to ``<unk>`` like the reference."""
        special_id = self.id_by_special.get(token)
        if special_id is not None:
            return special_id
        spm_id = self._processor.piece_to_id(token)
        if spm_id < FIRST_ORDINARY_SPM_ID:
            # spm's <unk>/<s>/</s> pieces are not ordinary pieces; anything else unknown is <unk>.
            return UNK_ID
        return spm_id + FAIRSEQ_OFFSET

    def check_ids(self, ids: Iterable[int], argument: str) -> list[int]:
        """Validate ids as Python ints in ``[0, size)``, naming ``argument`` in the error."""
        checked = [int(i) for i in ids]
        for position, token_id in enumerate(checked):
            if not 0 <= token_id < self.size:
                raise ValueError(
                    f"{argument}[{position}] = {token_id} is outside the vocabulary [0, {self.size})"
                )
        return checked

    def id_to_token(self, token_id: int) -> str:
        """Token string of one id (checked)."""
        (checked,) = self.check_ids([token_id], "ids")
        return self.pieces[checked]
