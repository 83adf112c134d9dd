"""Parity of xlmr_jax's tokenizer with transformers' XLMRobertaTokenizer on a model trained here."""

from __future__ import annotations

import itertools
import random
import unicodedata

import numpy as np
import pytest
from tokenizer_corpus import DIVERGENT_TEXTS, PARITY_TEXTS, TRAINING_SENTENCES
from tokenizer_helpers import as_lists, fairseq_ids_from_sentencepiece

pytest_plugins = ("tokenizer_fixtures",)  # tok, ref_tok, tok_dir, spm_model
# The reference warns about argument combinations we test on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ALL_OUTPUTS = dict(return_attention_mask=True, return_special_tokens_mask=True, return_offsets_mapping=True)

# Texts holding decomposed characters (e + U+0301): the reference's offsets cut the combining mark
# off (tokenizers' grapheme-wise Precompiled normaliser), ours cover it; see test_offsets_cover_*.
DECOMPOSED_TEXTS = frozenset(text for text in PARITY_TEXTS if unicodedata.normalize("NFC", text) != text)
OFFSET_PARITY_TEXTS = [text for text in PARITY_TEXTS if text not in DECOMPOSED_TEXTS]


def _encode_both(tok, ref_tok, *args, offsets: bool = True, **kwargs) -> tuple[dict, dict]:
    options = {**ALL_OUTPUTS, "return_offsets_mapping": offsets, **kwargs}
    return as_lists(tok(*args, return_tensors=None, **options)), as_lists(ref_tok(*args, **options))


def test_vocabulary_matches_reference(tok, ref_tok, spm_model):
    assert len(tok) == tok.vocab_size == len(ref_tok) == spm_model.get_piece_size() + 2
    assert tok.get_vocab() == ref_tok.get_vocab()
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == ref_tok.mask_token_id == len(tok) - 1
    assert tok.all_special_ids == ref_tok.all_special_ids
    assert tok.all_special_tokens == ref_tok.all_special_tokens
    for spm_id in (3, 10, spm_model.get_piece_size() - 1):
        piece = spm_model.id_to_piece(spm_id)
        assert tok.convert_tokens_to_ids(piece) == ref_tok.convert_tokens_to_ids(piece) == spm_id + 1


@pytest.mark.parametrize("text", PARITY_TEXTS, ids=range(len(PARITY_TEXTS)))
def test_single_text_matches_reference(tok, ref_tok, text):
    mine, theirs = _encode_both(tok, ref_tok, text, offsets=text not in DECOMPOSED_TEXTS)
    assert mine == theirs


def test_every_parity_text_has_the_expected_coverage(tok):
    """The corpus really exercises <unk>, <mask> in text and the other special tokens in text."""
    ids = set(itertools.chain.from_iterable(tok(list(PARITY_TEXTS), return_tensors=None)["input_ids"]))
    assert {0, 1, 2, 3, tok.mask_token_id} <= ids


def test_batch_with_padding_matches_reference(tok, ref_tok):
    texts = OFFSET_PARITY_TEXTS * 3  # big enough for the multi-threaded batch encoder
    mine = tok(texts, padding=True, **ALL_OUTPUTS)
    theirs = ref_tok(texts, padding=True, return_tensors="np", **ALL_OUTPUTS)
    assert set(mine) == set(theirs)
    for key in theirs:
        assert mine[key].dtype == np.int32, key
        np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)


@pytest.mark.parametrize("reverse", [False, True])
def test_pairs_match_reference(tok, ref_tok, reverse):
    firsts = OFFSET_PARITY_TEXTS
    seconds = firsts[::-1] if reverse else firsts[1:] + firsts[:1]
    mine, theirs = _encode_both(tok, ref_tok, firsts, seconds, padding=True)
    assert mine == theirs
    as_tuples = list(zip(firsts, seconds, strict=True))
    assert as_lists(tok(as_tuples, return_tensors=None, padding=True, **ALL_OUTPUTS)) == theirs


@pytest.mark.parametrize(
    ("padding", "max_length", "pad_to_multiple_of"),
    [
        (True, None, None),
        ("longest", None, 8),
        ("max_length", 48, None),
        ("max_length", 50, 16),
        ("max_length", None, None),
        (False, None, None),
    ],
)
def test_padding_modes_match_reference(tok, ref_tok, padding, max_length, pad_to_multiple_of):
    texts = [text for text in OFFSET_PARITY_TEXTS if len(text) < 45]
    mine, theirs = _encode_both(
        tok,
        ref_tok,
        texts,
        padding=padding,
        max_length=max_length,
        pad_to_multiple_of=pad_to_multiple_of,
        truncation=False,
    )
    assert mine == theirs


TRUNCATION_CASES = [
    # (strategy, max_length, stride, pair)
    (True, 12, 0, False),
    ("longest_first", 9, 3, False),
    ("only_first", 10, 4, False),
    ("longest_first", 16, 0, True),
    ("longest_first", 13, 2, True),
    (True, 21, 4, True),
    ("only_first", 32, 5, True),
    ("only_second", 30, 3, True),
    ("only_second", 40, 0, True),
    ("longest_first", 2, 0, False),
    ("longest_first", 4, 0, True),
]
# Overflow windows need room for more than `stride` tokens (ours raise otherwise, see test_tokenizer.py).
TRUNCATION_PARAMS = [
    (*case, overflow)
    for case in TRUNCATION_CASES
    for overflow in (False, True)
    if not overflow or case[1] - (4 if case[3] else 2) > case[2]
]


@pytest.mark.parametrize(("strategy", "max_length", "stride", "pair", "overflow"), TRUNCATION_PARAMS)
def test_truncation_and_overflow_windows_match_reference(
    tok, ref_tok, strategy, max_length, stride, pair, overflow
):
    long_texts = [TRAINING_SENTENCES[i] for i in (0, 7, 13, 16, 18)]
    other_long_texts = [TRAINING_SENTENCES[i] for i in (2, 9, 11, 14, 17)]
    short_texts = ["Where?", "Qui est là ?", "Кто там?", "誰?", "Who is it, really?"]
    if not pair:
        args = (long_texts,)
    elif strategy == "only_first":
        args = (long_texts, short_texts)
    elif strategy == "only_second":
        args = (short_texts, long_texts)
    else:
        args = (long_texts, other_long_texts)
    options = dict(
        truncation=strategy, max_length=max_length, stride=stride, return_overflowing_tokens=overflow
    )
    mine, theirs = _encode_both(tok, ref_tok, *args, **options)
    assert mine == theirs
    padded_mine, padded_theirs = _encode_both(tok, ref_tok, *args, padding="max_length", **options)
    assert padded_mine == padded_theirs


def test_overflow_on_a_single_long_document_matches_reference(tok, ref_tok):
    """The QA set-up: question + long context, windows over the context with a stride."""
    question = "Where is the capital?"
    context = " ".join(TRAINING_SENTENCES)
    options = dict(
        truncation="only_second",
        max_length=48,
        stride=12,
        return_overflowing_tokens=True,
        padding="max_length",
    )
    mine, theirs = _encode_both(tok, ref_tok, question, context, **options)
    assert mine == theirs
    assert len(mine["input_ids"]) > 5 and set(mine["overflow_to_sample_mapping"]) == {0}


def test_add_special_tokens_false_matches_reference(tok, ref_tok):
    texts = OFFSET_PARITY_TEXTS[:8]
    mine, theirs = _encode_both(tok, ref_tok, texts, add_special_tokens=False)
    assert mine == theirs
    mine, theirs = _encode_both(
        tok, ref_tok, texts, texts[::-1], add_special_tokens=False, truncation=True, max_length=10
    )
    assert mine == theirs


def test_mask_in_text_matches_reference(tok, ref_tok):
    texts = [
        "The capital of France is <mask>.",
        "a <mask>",
        "a<mask>",
        "a \t\u3000 <mask> b",
        "<mask>b",
        "x <mask>",
    ]
    mine, theirs = _encode_both(tok, ref_tok, texts)
    assert mine == theirs
    # lstrip: the whitespace before the mask belongs to the mask, so spacing does not change ids.
    assert mine["input_ids"][1] == mine["input_ids"][2]
    assert mine["offset_mapping"][1][2] == (1, 8)  # " <mask>": the span includes the stripped space
    assert tok.mask_token_id in mine["input_ids"][0]


def test_decode_matches_reference(tok, ref_tok):
    encodings = tok(list(PARITY_TEXTS), return_tensors=None)["input_ids"]
    for ids in encodings:
        for skip in (False, True):
            assert tok.decode(ids, skip_special_tokens=skip) == ref_tok.decode(ids, skip_special_tokens=skip)
    assert tok.batch_decode(encodings) == ref_tok.batch_decode(encodings)


def test_decode_of_random_ids_matches_reference(tok, ref_tok):
    rng = random.Random(0)
    for _ in range(300):
        ids = [rng.randrange(len(tok)) for _ in range(rng.randrange(0, 12))]
        for skip in (False, True):
            assert tok.decode(ids, skip_special_tokens=skip) == ref_tok.decode(ids, skip_special_tokens=skip)


def test_convert_ids_and_tokens_match_reference(tok, ref_tok):
    ids = list(range(len(tok)))
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == ref_tok.convert_ids_to_tokens(ids)
    assert tok.convert_tokens_to_ids(tokens) == ref_tok.convert_tokens_to_ids(tokens)
    assert tok.convert_tokens_to_ids("never-a-piece") == ref_tok.convert_tokens_to_ids("never-a-piece") == 3


@pytest.mark.parametrize("text", DIVERGENT_TEXTS, ids=["nfd-vietnamese", "next-line", "viterbi-tie"])
def test_follows_sentencepiece_where_reference_diverges(tok, spm_model, text):
    """Ids come from sentencepiece (what fairseq trained XLM-R on), not from the reference."""
    assert tok.encode(text) == fairseq_ids_from_sentencepiece(spm_model, text)


def test_nfd_text_keeps_its_diacritics(tok):
    """The reference's normaliser drops combining marks of NFD Vietnamese; sentencepiece composes them."""
    nfd = unicodedata.normalize("NFD", "Tiếng Việt rất đẹp")
    nfc = unicodedata.normalize("NFC", nfd)
    assert tok.encode(nfd) == tok.encode(nfc)
    assert tok.decode(tok.encode(nfd), skip_special_tokens=True) == nfc


def _segmentation_score(spm_model, tokens: list[str]) -> float:
    return sum(spm_model.get_score(spm_model.piece_to_id(token)) for token in tokens)


def _known_pieces(spm_model, tokens: list[str]) -> str:
    """The tokens joined, every unknown piece written "<unk>" (the reference shows its raw text)."""
    return "".join("<unk>" if spm_model.piece_to_id(token) == 0 else token for token in tokens)


def test_disagreements_with_reference_are_its_normaliser_or_ties(tok, ref_tok, spm_model):
    """On random text, every id mismatch is explained: either the reference normalises the text
    differently from sentencepiece (after its whitespace split), or both segment the same normalised
    text into pieces of exactly equal total score (a tie each library breaks its own way)."""
    rng = random.Random(1)
    alphabet = list("".join(TRAINING_SENTENCES) + " \t\n\u0301\u0303\u200b\u200d\x85\xa0\u3000\x01!!!...") * 3
    alphabet += [chr(code) for code in range(0x20, 0x3000) if not 0xD800 <= code < 0xE000]
    normalizer = ref_tok.backend_tokenizer.normalizer
    causes = {"normaliser": 0, "tie": 0}
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(25)))
        if rng.random() < 0.3:  # runs of one character are where equal-score segmentations live
            text += rng.choice(" x") + rng.choice("!?.-*") * rng.randrange(2, 9)
        if "<" in text or tok.encode(text) == ref_tok.encode(text):
            continue
        reference_words = normalizer.normalize_str(text).split()
        spm_words = [word for word in spm_model.normalize(text).replace("\u2581", " ").split(" ") if word]
        if reference_words != spm_words:
            causes["normaliser"] += 1
            continue
        mine, theirs = tok.tokenize(text), ref_tok.tokenize(text)
        assert _known_pieces(spm_model, mine) == _known_pieces(spm_model, theirs), repr(text)
        assert _segmentation_score(spm_model, mine) == pytest.approx(_segmentation_score(spm_model, theirs))
        causes["tie"] += 1
    assert causes["normaliser"] > 0 and causes["tie"] > 0, f"a kind of disagreement vanished: {causes}"


def test_offsets_cover_decomposed_characters(tok, ref_tok):
    text = "precomposed é and decomposed e\u0301 ñ n\u0303"
    mine = tok(text, return_offsets_mapping=True, return_tensors=None)
    theirs = ref_tok(text, return_offsets_mapping=True)
    assert mine["input_ids"] == theirs["input_ids"]
    tokens = tok.convert_ids_to_tokens(mine["input_ids"])
    spans = {token: [] for token in tokens}
    for token, span in zip(tokens, mine["offset_mapping"], strict=True):
        spans[token].append(span)
    # Precomposed é is one character; decomposed e + U+0301 is two, and both belong to the piece.
    assert spans["é"] == [(12, 13), (29, 31)]
    assert spans["ñ"] == [(32, 33), (34, 36)]
    assert [text[start:end] for start, end in spans["é"]] == ["é", "e\u0301"]
