"""API, file round trips and error handling of xlmr_jax's XLM-R tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import transformers
from tokenizer_corpus import PARITY_TEXTS
from tokenizer_helpers import as_lists

from xlmr_jax.tokenizer import BatchEncoding, XLMRobertaTokenizer

pytest_plugins = ("tokenizer_fixtures",)  # tok, ref_tok, tok_dir, spm_model
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# -- layout and outputs ------------------------------------------------------------------------------


def test_single_and_pair_layout(tok):
    a = tok.encode("Москва", add_special_tokens=False)
    b = tok.encode("東京", add_special_tokens=False)
    assert tok.encode("Москва") == [0, *a, 2]
    assert tok.encode("Москва", "東京") == [0, *a, 2, 2, *b, 2]
    assert tok.build_inputs_with_special_tokens(a, b) == [0, *a, 2, 2, *b, 2]


def test_empty_text_is_bos_eos(tok):
    assert tok.encode("") == [0, 2]
    assert tok.encode("   \t\n") == [0, 2]
    assert tok.encode("", "") == [0, 2, 2, 2]
    assert tok.decode(tok.encode("")) == "<s></s>"


def test_default_output_is_int32_numpy_with_attribute_access(tok):
    encoding = tok(
        ["a b c", "Москва"],
        padding=True,
        return_special_tokens_mask=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    assert isinstance(encoding, BatchEncoding)
    assert encoding.input_ids is encoding["input_ids"]
    assert list(encoding) == [
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "special_tokens_mask",
        "offset_mapping",
    ]
    for key, value in encoding.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.int32, key
    batch, width = encoding.input_ids.shape
    assert batch == 2 and encoding.offset_mapping.shape == (2, width, 2)
    assert not encoding.token_type_ids.any()
    with pytest.raises(AttributeError, match="input_ids"):
        _ = encoding.no_such_field


def test_single_text_keeps_a_batch_axis_in_numpy_and_not_in_lists(tok):
    assert tok("a b").input_ids.shape[0] == 1
    assert tok("a b", return_tensors=None)["input_ids"] == tok.encode("a b")


def test_padding_uses_pad_id_zero_mask_and_special_mask(tok):
    encoding = tok(["a", "a b c d"], padding=True, return_special_tokens_mask=True)
    short = encoding.input_ids[0]
    n = int(encoding.attention_mask[0].sum())
    assert (short[n:] == tok.pad_token_id).all()
    assert (encoding.special_tokens_mask[0][n:] == 1).all()


@pytest.mark.parametrize(("buckets", "expected"), [((8, 16, 32), 16), ((64,), 64), ((12, 10), 12)])
def test_buckets_pick_the_smallest_width_that_fits(tok, buckets, expected):
    texts = ["a b c", "Москва — столица России"]  # longest: 11 tokens with this model
    assert max(len(ids) for ids in tok.encode(texts)) == 11
    assert tok(texts, buckets=buckets).input_ids.shape == (2, expected)


def test_pad_to_multiple_of_rounds_up(tok):
    assert tok(["a b c", "Москва — столица России"], padding=True, pad_to_multiple_of=8).input_ids.shape == (
        2,
        16,
    )
    # pad_to_multiple_of alone implies padding: it can only mean "give me this shape".
    assert tok(["a", "a b c"], pad_to_multiple_of=8).input_ids.shape == (2, 8)


def test_truncation_with_default_model_max_length(tok):
    long_text = "word " * 600
    assert tok.model_max_length == 512
    assert len(tok.encode(long_text, truncation=True)) == 512
    assert tok(long_text, padding="max_length", truncation=True).input_ids.shape == (1, 512)


def test_overflow_to_sample_mapping_in_numpy(tok):
    encoding = tok(
        ["one two three four five six seven", "x"],
        truncation=True,
        max_length=6,
        stride=1,
        return_overflowing_tokens=True,
        padding="max_length",
    )
    assert encoding.input_ids.shape[1] == 6
    mapping = encoding.overflow_to_sample_mapping
    assert mapping.dtype == np.int32 and mapping[-1] == 1 and (mapping[:-1] == 0).all()


def test_fill_mask_input_has_the_mask_id(tok):
    encoding = tok("The capital of France is <mask>.")
    ids = encoding.input_ids[0].tolist()
    assert ids.count(tok.mask_token_id) == 1
    assert tok.mask_token == "<mask>" and tok.convert_ids_to_tokens(tok.mask_token_id) == "<mask>"


def test_split_special_tokens_keeps_them_as_text(tok_dir):
    plain = XLMRobertaTokenizer.from_pretrained(tok_dir, split_special_tokens=True)
    assert plain.mask_token_id not in plain.encode("a <mask> b")


def test_tokenize_and_token_conversions(tok):
    tokens = tok.tokenize("Москва <mask>")
    assert tokens[-1] == "<mask>" and "".join(tokens[:-1]).replace("\u2581", " ").strip() == "Москва"
    ids = tok.convert_tokens_to_ids(tokens)
    assert tok.convert_ids_to_tokens(ids) == tokens
    assert tok.convert_ids_to_tokens(ids[0]) == tokens[0]


def test_decode_accepts_numpy_and_batch_arrays(tok):
    encoding = tok(["Москва", "東京 and more"], padding=True)
    texts = tok.batch_decode(encoding.input_ids, skip_special_tokens=True)
    assert texts == ["Москва", "東京 and more"]
    assert tok.decode(encoding.input_ids[0]) == tok.decode(encoding.input_ids[0].tolist())
    assert tok.decode(np.int64(5)) == tok.decode([5])


def test_thread_count_and_batching_do_not_change_results(tok_dir, tok):
    single = XLMRobertaTokenizer.from_pretrained(tok_dir, num_threads=1)
    texts = list(PARITY_TEXTS) * 20  # large enough for sentencepiece's threaded batch encoder
    options = dict(padding=True, return_offsets_mapping=True)
    threaded = tok(texts, **options)
    for key, value in single(texts, **options).items():
        np.testing.assert_array_equal(value, threaded[key], err_msg=key)
    one_by_one = [tok(text, return_offsets_mapping=True, return_tensors=None) for text in PARITY_TEXTS]
    batched = tok(texts, return_offsets_mapping=True, return_tensors=None)
    assert batched["input_ids"][: len(PARITY_TEXTS)] == [encoding["input_ids"] for encoding in one_by_one]
    assert batched["offset_mapping"][-len(PARITY_TEXTS) :] == [
        encoding["offset_mapping"] for encoding in one_by_one
    ]


def test_empty_batch_gives_empty_arrays(tok):
    encoding = tok([], padding=True)
    assert encoding.input_ids.shape == (0, 0) and encoding.input_ids.dtype == np.int32
    assert tok([], return_tensors=None)["input_ids"] == []


# -- files ---------------------------------------------------------------------------------------------


def test_save_pretrained_round_trip_loads_in_reference(tok, ref_tok, tmp_path):
    written = tok.save_pretrained(tmp_path / "saved")
    assert sorted(Path(path).name for path in written) == [
        "sentencepiece.bpe.model",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ]
    assert not [path for path in (tmp_path / "saved").iterdir() if path.name.endswith(".tmp")]
    reloaded_reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    reloaded = XLMRobertaTokenizer.from_pretrained(tmp_path / "saved")
    texts = [text for text in PARITY_TEXTS if "e\u0301" not in text]
    options = dict(return_offsets_mapping=True, return_special_tokens_mask=True, padding=True)
    expected = as_lists(ref_tok(texts, **options))
    assert as_lists(reloaded_reference(texts, **options)) == expected
    assert as_lists(reloaded(texts, return_tensors=None, **options)) == expected
    assert reloaded_reference.model_max_length == reloaded.model_max_length == 512
    assert reloaded_reference.added_tokens_decoder[tok.mask_token_id].lstrip


def test_save_pretrained_overwrites_in_place(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 512 and config["tokenizer_class"] == "XLMRobertaTokenizer"


def test_bare_model_file_gets_release_defaults(tok_dir, tmp_path):
    shutil.copy(tok_dir / "sentencepiece.bpe.model", tmp_path / "sentencepiece.bpe.model")
    for tokenizer in (
        XLMRobertaTokenizer.from_pretrained(tmp_path),
        XLMRobertaTokenizer(tmp_path / "sentencepiece.bpe.model"),
        XLMRobertaTokenizer.from_pretrained(tmp_path / "sentencepiece.bpe.model"),
    ):
        assert tokenizer.model_max_length == 512
        assert tokenizer.encode("a <mask>") == tokenizer.encode("a<mask>")


def test_config_values_are_read(tok_dir, tmp_path):
    shutil.copy(tok_dir / "sentencepiece.bpe.model", tmp_path / "sentencepiece.bpe.model")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))
    assert XLMRobertaTokenizer.from_pretrained(tmp_path).model_max_length == 64
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": int(1e30)}))
    unlimited = XLMRobertaTokenizer.from_pretrained(tmp_path)
    assert unlimited.model_max_length is None
    assert len(unlimited.encode("word " * 600, truncation=True)) == len(unlimited.encode("word " * 600)) > 512


# -- errors ------------------------------------------------------------------------------------------


def test_missing_model_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="sentencepiece.bpe.model"):
        XLMRobertaTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing.model")):
        XLMRobertaTokenizer(tmp_path / "nothing.model")


@pytest.mark.parametrize("content", [b"", b"not a sentencepiece model", b"\x0a\x05hello"])
def test_corrupt_model_file_names_the_path(tmp_path, content):
    (tmp_path / "sentencepiece.bpe.model").write_bytes(content)
    with pytest.raises(ValueError, match="sentencepiece.bpe.model"):
        XLMRobertaTokenizer.from_pretrained(tmp_path)


def test_truncated_model_file_names_the_path(tok_dir, tmp_path):
    data = (tok_dir / "sentencepiece.bpe.model").read_bytes()
    (tmp_path / "sentencepiece.bpe.model").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=str(tmp_path)):
        XLMRobertaTokenizer.from_pretrained(tmp_path)


def test_corrupt_config_names_the_path(tok_dir, tmp_path):
    shutil.copy(tok_dir / "sentencepiece.bpe.model", tmp_path / "sentencepiece.bpe.model")
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_config.json"):
        XLMRobertaTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("bad", [5, None, b"bytes", {"text": "a"}, 3.5])
def test_non_string_input_is_a_type_error(tok, bad):
    with pytest.raises(TypeError, match="text must be"):
        tok(bad)


def test_none_in_a_batch_names_the_index(tok):
    with pytest.raises(TypeError, match=r"text\[2\] must be a str, got None"):
        tok(["a", "b", None, "d"])
    with pytest.raises(TypeError, match=r"text_pair\[1\] must be a str, got None"):
        tok(["a", "b"], ["c", None])
    with pytest.raises(TypeError, match=r"text\[1\]\[1\] must be a str, got an? int"):
        tok([("a", "b"), ("c", 7)])


def test_mismatched_pair_lengths(tok):
    with pytest.raises(ValueError, match="text has 2 items but text_pair has 1"):
        tok(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="text_pair must be a str"):
        tok("a", ["b"])


@pytest.mark.parametrize(("args", "max_length"), [(("some text",), 1), (("some text", "more"), 3)])
def test_max_length_below_special_tokens_is_a_value_error(tok, args, max_length):
    with pytest.raises(ValueError, match=f"max_length={max_length} is smaller than the"):
        tok(*args, truncation=True, max_length=max_length)


def test_max_length_equal_to_special_tokens_leaves_only_them(tok):
    assert tok.encode("some text", truncation=True, max_length=2) == [0, 2]
    assert tok.encode("a", "b", truncation=True, max_length=4) == [0, 2, 2, 2]


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8"])
def test_bad_max_length_values(tok, bad):
    with pytest.raises(ValueError, match="max_length"):
        tok("a", max_length=bad)


def test_stride_too_large_for_windows_names_stride(tok):
    with pytest.raises(ValueError, match="stride=4 must be smaller than the 4 text tokens"):
        tok("a b c d e f g h", truncation=True, max_length=6, stride=4, return_overflowing_tokens=True)
    with pytest.raises(ValueError, match="stride=-1"):
        tok("a", stride=-1)


def test_only_strategies_that_cannot_fit(tok):
    with pytest.raises(ValueError, match="needs text_pair"):
        tok("a b c", truncation="only_second", max_length=4)
    with pytest.raises(ValueError, match=r"example 0: truncation='only_first' cannot fit"):
        tok("a", "b c d e f g h i j k", truncation="only_first", max_length=8)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(padding="everything"), "padding='everything' is not one of"),
        (dict(truncation="middle"), "truncation='middle' is not one of"),
        (dict(return_tensors="pt"), "return_tensors='pt'"),
        (dict(buckets=(4,)), "more than the largest bucket 4"),
        (dict(buckets=(64,), padding="max_length"), "buckets replaces"),
        (dict(buckets=()), "non-empty"),
        (dict(padding="max_length", max_length=30, truncation=True, pad_to_multiple_of=8), "not a multiple"),
        (dict(padding="max_length", max_length=4), "pass truncation=True"),
    ],
)
def test_bad_options_are_value_errors(tok, options, message):
    with pytest.raises(ValueError, match=message):
        tok(["Москва — столица России", "a"], **options)


def test_ragged_numpy_output_asks_for_padding(tok):
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a", "a b c d"])


def test_lone_surrogate_is_a_value_error(tok):
    with pytest.raises(
        ValueError, match=r"text\[1\] is not valid Unicode: lone surrogate '\\ud800' at position 4"
    ):
        tok(["fine", "bad \ud800 text"])
    with pytest.raises(ValueError, match=r"text_pair\[0\] is not valid Unicode"):
        tok("fine", "\udfff", return_offsets_mapping=True)


def test_decode_rejects_ids_outside_the_vocabulary(tok):
    with pytest.raises(ValueError, match=rf"token_ids\[1\] = {len(tok)} is outside"):
        tok.decode([5, len(tok)])
    with pytest.raises(ValueError, match="-1"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="batch_decode"):
        tok.decode([[1, 2]])
    with pytest.raises(ValueError, match="outside"):
        tok.convert_ids_to_tokens(len(tok))
