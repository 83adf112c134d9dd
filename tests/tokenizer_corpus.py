"""Multilingual text for the tokenizer tests, and a tiny sentencepiece model trained on it.

Model hubs are out of reach in tests, so the tests train their own unigram model with XLM-R's
settings (nmt_nfkc normalisation, no byte fallback) and load it both here and in ``transformers``.
"""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import sentencepiece as spm

TRAINING_SENTENCES = (
    # Latin with accents
    "The quick brown fox jumps over the lazy dog while the band plays on.",
    "Le café de la gare est fermé le dimanche, mais l'hôtel reste ouvert.",
    "Der Bürgermeister öffnet die Tür für die Gäste aus Zürich und Köln.",
    "El niño comió paella en la plaza mayor de Salamanca con su señora madre.",
    "A praça de São Paulo está cheia de gente às três horas da tarde.",
    "Łódź i Kraków to piękne miasta, a Dvořák pisał muzykę w Pradze.",
    "Tiếng Việt rất đẹp và người Việt Nam rất thân thiện.",
    # Cyrillic, Greek
    "Привет, как дела? Москва — столица России, а Киев — столица Украины.",
    "Мы читали книгу о войне и мире целую неделю.",
    "Καλημέρα κόσμε! Η Αθήνα είναι όμορφη πόλη με πολλά μουσεία.",
    # Arabic, Hebrew, Hindi
    "مرحبا بالعالم، كيف حالك اليوم؟ القاهرة مدينة كبيرة وجميلة.",
    "שלום עולם, מה שלומך היום בירושלים?",
    "नमस्ते दुनिया, आप कैसे हैं? दिल्ली भारत की राजधानी है।",
    # Chinese, Japanese, Korean
    "你好，世界！北京是中国的首都。我们今天去公园散步。",
    "こんにちは世界。東京は日本の首都です。カタカナとひらがなを勉強します。",
    "안녕하세요 세계! 서울은 한국의 수도입니다. 오늘 날씨가 좋네요.",
    # Emoji, digits, punctuation, symbols
    "Emoji time 😀 🎉 👍🏽 ❤️ 🇫🇷 and the family 👨‍👩‍👧 is here.",
    "Numbers 12345 and 3.14159, dates 2024-01-31, prices $9.99 and €10,50.",
    "Punctuation!!! Really??? Wait... --- *** ((()))  [ok] {fine} <tag> 50% #1 @home & more",
    "ﬁne ligatures ① ② Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ and ¼ cup … done",
)

# Test inputs for parity with the reference: every script above, whitespace oddities, combining
# marks and zero-width characters, special tokens written in the text, and characters the model
# never saw (Thai, Georgian, Ethiopic) so <unk> shows up.
PARITY_TEXTS = (
    "The quick brown fox",
    "Café naïve façade résumé Ångström",
    "Москва — столица. Мы читали книгу!",
    "Η Αθήνα είναι όμορφη.",
    "مرحبا بالعالم، القاهرة مدينة كبيرة",
    "नमस्ते दुनिया, दिल्ली भारत की राजधानी है।",
    "北京是中国的首都。",
    "東京は日本の首都です。カタカナ",
    "서울은 한국의 수도입니다.",
    "Emoji 😀🎉 👍🏽 ❤️ 🇫🇷 👨‍👩‍👧 end",
    "Numbers 12345, 3.14159 and 2024-01-31 for $9.99",
    "!!! ??? ... --- *** ((())) <<>> ===",
    "tabs\tand   repeated    spaces\t\there",
    "  leading and trailing spaces   ",
    "\n\nnew\nlines\r\nand\rreturns\n",
    "zero\u200bwidth\u200cjoiners\u200dhere\ufeffand\u2060there",
    "nbsp\u00a0ideographic\u3000em\u2003space",
    "precomposed é and decomposed e\u0301 ñ n\u0303",
    "Ｆｕｌｌｗｉｄｔｈ ①② ﬁne ¼ …",
    "ภาษาไทย ქართული ግዕዝ unknown scripts",
    "mixed Москва東京 مرحبا 123abc",
    "a",
    "",
    " ",
    "<mask>",
    "The capital of France is <mask>.",
    "Two <mask> <mask> masks and<mask>glued",
    "specials </s> and <s> and <pad> <unk> in text",
    "spaces before\t \u3000<mask> and after <mask>   .",
    "a very long sentence " * 12,
)

# Texts where the reference (transformers v5, a `tokenizers` pipeline) and raw sentencepiece
# disagree on ids. We follow sentencepiece; see test_follows_sentencepiece_where_reference_diverges.
DIVERGENT_TEXTS = (
    # NFD Vietnamese: the reference's Precompiled normaliser drops the second combining mark of
    # multi-mark graphemes (huggingface/tokenizers#2116, #2334); sentencepiece composes them.
    unicodedata.normalize("NFD", "Tiếng Việt rất đẹp"),
    # U+0085 (NEXT LINE) is whitespace to the reference's WhitespaceSplit but an ordinary
    # (unknown) character to sentencepiece's nmt_nfkc rules.
    "line\x85break",
    # A Viterbi tie: "!!!" + "!" and "!" + "!!!" score exactly the same; the two libraries break
    # the tie differently (runs of one repeated character are where this happens).
    "!!!!",
)


def write_training_text(path: Path, n_lines: int = 4000, seed: int = 0) -> None:
    """Shuffled word salad from TRAINING_SENTENCES: enough varied text for a few hundred pieces."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = f"{rng.choice(TRAINING_SENTENCES)} {rng.choice(TRAINING_SENTENCES)}".split(" ")
        rng.shuffle(words)
        lines.append(" ".join(words))
    # Whole sentences too, so frequent words become pieces of their own.
    lines.extend(TRAINING_SENTENCES * 20)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def train_model(directory: Path, vocab_size: int = 800, model_max_length: int = 512) -> Path:
    """Train a unigram model like XLM-R's and lay it out as a transformers tokenizer directory.

    The directory gets ``sentencepiece.bpe.model`` plus a ``tokenizer_config.json`` that declares
    the released model's ``<mask>`` (lstrip) and length limit, which transformers v5 would otherwise
    not know when it converts a bare model file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    write_training_text(corpus)
    prefix = directory / "spm"
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        normalization_rule_name="nmt_nfkc",
        byte_fallback=False,
        character_coverage=1.0,
        num_threads=2,
        minloglevel=2,
    )
    model_path = directory / "sentencepiece.bpe.model"
    prefix.with_suffix(".model").rename(model_path)
    n_pieces = spm.SentencePieceProcessor(model_file=str(model_path)).get_piece_size()
    mask_id = n_pieces + 1
    added = {
        str(token_id): {
            "content": token,
            "lstrip": token == "<mask>",
            "rstrip": False,
            "normalized": False,
            "single_word": False,
            "special": True,
        }
        for token_id, token in ((0, "<s>"), (1, "<pad>"), (2, "</s>"), (3, "<unk>"), (mask_id, "<mask>"))
    }
    config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": model_max_length,
        "added_tokens_decoder": added,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory
