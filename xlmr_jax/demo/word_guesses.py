"""Does the model fill a masked word with a word? Held-out messages one at a time, one word masked.

This is the demo's own situation: `xlmr-jax demo` gives the model one short sentence with one
`<mask>` where a word was. Each held-out line becomes `<s>` line `</s>` (nothing packed around it),
and one whole word of it that is a single piece is masked, chosen by a generator seeded with the
line's index, so every run masks the same piece. In the languages written with spaces a whole word
is a piece that starts a word (`▁`) and is followed by the next word's start, punctuation or the
end; in Chinese and Japanese, any piece of their letters. Reported: top-1 and top-5 accuracy and
`word_top1`, how often the single best guess is itself a word of the line's script in the same
sense (the demo's "real words of the right language"; suffixes, single letters, `▁` and
punctuation are not), overall and per language. The figures of `heldout.py` measure the training
task; these measure what a reader of the demo sees.
"""

from __future__ import annotations

import collections
import unicodedata
from collections.abc import Sequence

import numpy as np

SEED = 13
MAX_LENGTH = 64  # longer held-out lines are left out (a few UI paragraphs)

# language -> the Unicode script names (first word of a letter's character name) its words use
SCRIPTS = {
    **dict.fromkeys(("en", "fr", "de", "es", "it", "pt", "nl"), ("LATIN",)),
    "ru": ("CYRILLIC",), "uk": ("CYRILLIC",), "el": ("GREEK",), "ar": ("ARABIC",), "fa": ("ARABIC",),
    "hi": ("DEVANAGARI",), "zh": ("CJK",), "ja": ("CJK", "HIRAGANA", "KATAKANA"), "ko": ("HANGUL",),
}
_ONE_LETTER_WORDS = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")
UNSPACED = ("zh", "ja")  # written without spaces between words


def is_word(piece: str, language: str) -> bool:
    """A sentencepiece piece that is a word of `language`'s script: letters and their combining marks
    only (after the `▁` word marker), the letters all in the script, two or more of them or one CJK /
    kana / Hangul letter; in a language written with spaces it must also start a word (`▁`)."""
    if language not in UNSPACED and not piece.startswith("\u2581"):
        return False
    text = piece.replace("\u2581", "")
    # combining marks (Devanagari vowel signs and virama, Arabic harakat) belong to the word
    if not text or not all(unicodedata.category(c)[0] in "LM" for c in text):
        return False
    names = [unicodedata.name(c, "").split(" ")[0] for c in text if unicodedata.category(c)[0] == "L"]
    if not names or not all(name in SCRIPTS[language] for name in names):
        return False
    return len(names) >= 2 or names[0] in _ONE_LETTER_WORDS


def is_whole_word(pieces: Sequence[str], position: int, language: str) -> bool:
    """`pieces[position]` is a word of `language` on its own: a word piece (`is_word`) that, where
    words are spaced, the next word, punctuation or the end follows (not the rest of its word)."""
    if not is_word(pieces[position], language):
        return False
    if language in UNSPACED or position + 1 >= len(pieces):
        return True
    following = pieces[position + 1]
    return following.startswith("\u2581") or not any(unicodedata.category(c)[0] == "L" for c in following)


def masked_messages(tokenizer, heldout: Sequence[tuple[str, str]]) -> list[tuple[str, np.ndarray, int, int]]:
    """(language, masked ids, mask position, original id) for each held-out line that fits
    `MAX_LENGTH` and has a whole word of one piece (`is_whole_word`)."""
    encoded = tokenizer([text for _, text in heldout], return_attention_mask=False, return_tensors=None)
    examples = []
    for index, ((language, _), ids) in enumerate(zip(heldout, encoded["input_ids"])):
        if len(ids) > MAX_LENGTH:
            continue
        ids = np.asarray(ids, np.int32)
        # </s> left off: the line's end follows its last piece
        pieces = tokenizer.convert_ids_to_tokens([int(i) for i in ids[:-1]])
        candidates = [p for p in range(1, len(ids) - 1) if is_whole_word(pieces, p, language)]
        if not candidates:
            continue
        position = int(np.random.default_rng([SEED, index]).choice(candidates))
        masked = ids.copy()
        masked[position] = tokenizer.mask_token_id
        examples.append((language, masked, position, int(ids[position])))
    return examples


def word_guesses(model, tokenizer, heldout: Sequence[tuple[str, str]], batch_size: int = 64) -> dict:
    """Top-1 / top-5 accuracy and `word_top1` over the masked held-out messages, overall and per
    language (`masks`: how many messages were scored)."""
    import xlmr_jax

    forward = xlmr_jax.jit_forward(model)
    examples = masked_messages(tokenizer, heldout)
    counts = collections.defaultdict(lambda: np.zeros(4, np.int64))  # language -> masks, top1, top5, word_top1
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        ids = np.full((batch_size, MAX_LENGTH), tokenizer.pad_token_id, np.int32)  # one shape: one compile
        positions = np.zeros((batch_size, 1), np.int32)
        for row, (_, masked, position, _) in enumerate(chunk):
            ids[row, :len(masked)] = masked
            positions[row, 0] = position
        logits = forward(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).astype(np.int32),
                         masked_positions=positions).logits
        top5 = np.argsort(-np.asarray(logits)[:, 0], axis=-1, kind="stable")[:, :5]
        for row, (language, _, _, target) in enumerate(chunk):
            best = tokenizer.convert_ids_to_tokens(int(top5[row, 0]))
            counts[language] += [1, top5[row, 0] == target, target in top5[row], is_word(best, language)]

    def scores(c):
        return {"masks": int(c[0]), "top1": c[1] / c[0], "top5": c[2] / c[0], "word_top1": c[3] / c[0]}

    return {**scores(sum(counts.values())), "per_language": {language: scores(c) for language, c in counts.items()}}
