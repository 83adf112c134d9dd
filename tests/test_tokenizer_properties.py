"""Property tests of the tokenizer on random Unicode (hypothesis, bounded example counts)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tokenizer_corpus import TRAINING_SENTENCES
from tokenizer_helpers import fairseq_ids_from_sentencepiece

pytest_plugins = ("tokenizer_fixtures",)  # tok, ref_tok, tok_dir, spm_model

SPECIAL_STRINGS = ("<s>", "</s>", "<pad>", "<unk>", "<mask>")
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Random Unicode (no surrogates: Python cannot UTF-8 encode them), mixed with the training
# vocabulary so that texts without unknown pieces are common too.
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
known_text = st.lists(st.sampled_from(" ".join(TRAINING_SENTENCES).split()), max_size=12).map(" ".join)
texts = st.one_of(any_text, known_text, st.tuples(known_text, any_text).map("".join))


def _without_special_strings(text: str) -> bool:
    return not any(token in text for token in SPECIAL_STRINGS)


def _normalized(processor, text: str) -> str:
    """What decoding should give back: sentencepiece's normalised text with "▁" as spaces."""
    return processor.normalize(text).replace("\u2581", " ").removeprefix(" ")


@PROPERTY_SETTINGS
@given(text=texts)
def test_ids_are_sentencepiece_ids_in_range(tok, spm_model, text):
    ids = tok.encode(text)
    assert all(0 <= token_id < len(tok) for token_id in ids)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    if _without_special_strings(text):
        assert ids == fairseq_ids_from_sentencepiece(spm_model, text)


@PROPERTY_SETTINGS
@given(text=texts)
def test_decode_inverts_encode_up_to_normalisation(tok, spm_model, text):
    ids = tok.encode(text)
    assume(tok.unk_token_id not in ids and _without_special_strings(text))
    assert tok.decode(ids, skip_special_tokens=True) == _normalized(spm_model, text)


@PROPERTY_SETTINGS
@given(text=texts)
def test_offsets_lie_inside_the_text_and_cover_it(tok, spm_model, text):
    encoding = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors=None)
    spans = [
        span
        for span, special in zip(encoding["offset_mapping"], encoding["special_tokens_mask"], strict=True)
        if not special
    ]
    starts = [start for start, _ in spans]
    assert all(0 <= start <= end <= len(text) for start, end in spans)
    assert starts == sorted(starts)
    covered = np.zeros(len(text), dtype=bool)
    for start, end in spans:
        covered[start:end] = True
    # Every character sentencepiece keeps (not whitespace, not deleted) belongs to some token.
    for position, char in enumerate(text):
        if _normalized(spm_model, f"a{char}b") not in ("a b", "ab"):
            assert covered[position], (position, char)


@PROPERTY_SETTINGS
@given(text=texts)
def test_each_piece_comes_from_its_span(tok, spm_model, text):
    assume(_without_special_strings(text))
    encoding = tok(text, return_offsets_mapping=True, return_tensors=None, add_special_tokens=False)
    for token_id, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True):
        content = tok.convert_ids_to_tokens(token_id).replace("\u2581", "")
        if token_id == tok.unk_token_id or not content:
            continue
        assert content in _normalized(spm_model, text[start:end]).replace(" ", ""), (
            token_id,
            start,
            end,
        )


@PROPERTY_SETTINGS
@given(batch=st.lists(texts, max_size=6))
def test_batch_equals_one_by_one(tok, batch):
    together = tok(batch, return_tensors=None, return_offsets_mapping=True)
    alone = [tok(text, return_tensors=None, return_offsets_mapping=True) for text in batch]
    assert together["input_ids"] == [encoding["input_ids"] for encoding in alone]
    assert together["offset_mapping"] == [encoding["offset_mapping"] for encoding in alone]


@PROPERTY_SETTINGS
@given(
    text=known_text,
    max_length=st.integers(min_value=3, max_value=24),
    stride=st.integers(min_value=0, max_value=10),
)
def test_overflow_windows_tile_the_text(tok, text, max_length, stride):
    assume(stride < max_length - 2)
    content = tok.encode(text, add_special_tokens=False)
    windows = tok(
        text,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_tensors=None,
    )["input_ids"]
    assert all(window[0] == 0 and window[-1] == 2 and len(window) <= max_length for window in windows)
    bodies = [window[1:-1] for window in windows]
    rebuilt = list(bodies[0])
    for body in bodies[1:]:
        # Consecutive windows share exactly `stride` tokens.
        assert body[:stride] == rebuilt[len(rebuilt) - stride :]
        rebuilt += body[stride:]
    assert rebuilt == content


@PROPERTY_SETTINGS
@given(
    batch=st.lists(texts, min_size=1, max_size=6), buckets=st.sets(st.integers(1, 80), min_size=1, max_size=4)
)
def test_bucketed_padding_picks_the_smallest_bucket_that_fits(tok, batch, buckets):
    longest = max(len(ids) for ids in tok.encode(batch))
    fitting = sorted(width for width in buckets if width >= longest)
    assume(fitting)
    encoding = tok(batch, buckets=sorted(buckets))
    assert encoding.input_ids.shape == (len(batch), fitting[0])
    assert encoding.input_ids.dtype == np.int32
    assert (encoding.attention_mask.sum(axis=1) == [len(ids) for ids in tok.encode(batch)]).all()
