"""The fine-tuning data side: files -> records (every format, every bad input), records -> features for
each task (checked against the reference example scripts' preprocessing where they define it), and
model outputs -> predictions -> metrics.

The tokenizer is the tests' own tiny sentencepiece model (tokenizer_fixtures); the reference for
token labels and QA windows is `transformers`' XLMRobertaTokenizer built from the same model file,
run through run_ner.py's / run_qa.py's own preprocessing (finetune_data_helpers).
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from finetune_data_helpers import run_ner_features, run_qa_features, write_jsonl
from tokenizer_corpus import TRAINING_SENTENCES

from xlmr_jax.finetune.features import FeatureSet, LabelMap
from xlmr_jax.finetune.records import (
    DataError,
    EmptyDataError,
    MalformedRecordError,
    MissingColumnError,
    Records,
    UnknownFormatError,
    UnseenLabelError,
    merge_columns,
    read_records,
)
from xlmr_jax.finetune.tasks import TASKS, TaskOptions, make_task

pytest_plugins = ("tokenizer_fixtures",)  # tok, ref_tok, tok_dir

# ------------------------------------------------------------------------------------------------
# records: formats


def test_jsonl_renames_columns_and_remembers_lines(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"review": "good", "label": 1}\n\n{"review": "bad", "label": 0}\n', encoding="utf-8")
    records = read_records(path, columns={"review": "sentence1"}, required=["sentence1", "label"])
    assert records == [{"sentence1": "good", "label": 1}, {"sentence1": "bad", "label": 0}]
    assert isinstance(records, Records) and records.places == ["line 1", "line 3"]


def test_json_holds_json_lines_or_an_array(tmp_path):
    lines = tmp_path / "lines.json"
    lines.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=2), encoding="utf-8")
    for path in (lines, array):
        assert read_records(path, required=["text"]) == [{"text": "a"}, {"text": "b"}]


def test_squad_nested_json_is_flattened(tmp_path):
    squad = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [
        {"context": "Paris is in France.", "qas": [
            {"id": "q1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12},
                                                                    {"text": "in France", "answer_start": 9}],
             "is_impossible": False},
            {"id": "q2", "question": "Who?", "answers": [], "plausible_answers": [{"text": "Paris", "answer_start": 0}],
             "is_impossible": True}]},
        {"context": "Berlin.", "qas": [{"id": 7, "question": "What?", "answers": [{"text": "Berlin", "answer_start": 0}]}]},
    ]}]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad, indent=1), encoding="utf-8")
    records = read_records(path, required=["question", "context", "answers"])
    assert records == [
        {"id": "q1", "question": "Where is Paris?", "context": "Paris is in France.",
         "answers": {"text": ["France", "in France"], "answer_start": [12, 9]}},
        {"id": "q2", "question": "Who?", "context": "Paris is in France.", "answers": {"text": [], "answer_start": []}},
        {"id": "7", "question": "What?", "context": "Berlin.", "answers": {"text": ["Berlin"], "answer_start": [0]}},
    ]
    assert records.places[2] == "data[0].paragraphs[1].qas[0]"


def test_squad_without_a_question_names_its_place(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "answers": []}]}]}]}))
    with pytest.raises(MalformedRecordError, match=r"bad.json data\[0\].paragraphs\[0\].qas\[0\]: no 'question'"):
        read_records(path, required=["question"])


def test_csv_types_whole_columns_and_counts_physical_lines(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(
        'sentence1,label,score,tokens,ner_tags,code\n'
        '"Hello, world",1,0.5,"[""EU"", ""rejects""]","[""B-ORG"", ""O""]",007\n'
        '"two\nlines",0,2,"[]","[]",x\n'
        'plain,2,-1e-3,"[""a""]","[""O""]",1\n', encoding="utf-8")
    records = read_records(path, required=["sentence1", "label"])
    assert records[0] == {"sentence1": "Hello, world", "label": 1, "score": 0.5, "tokens": ["EU", "rejects"],
                          "ner_tags": ["B-ORG", "O"], "code": "007"}
    assert records[1]["sentence1"] == "two\nlines" and records[1]["score"] == 2.0 and records[1]["tokens"] == []
    assert records[2]["score"] == -0.001 and records[2]["code"] == "1"
    assert records.places == ["line 2", "line 3", "line 5"]  # the quoted newline takes a line


def test_tsv_has_no_quoting(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text('sentence\tlabel\n"quoted" text\tpos\nit\'s "open\tneg\n', encoding="utf-8")
    records = read_records(path, columns={"sentence": "sentence1"}, required=["sentence1", "label"])
    assert records == [{"sentence1": '"quoted" text', "label": "pos"}, {"sentence1": "it's \"open", "label": "neg"}]


def test_txt_is_one_record_per_non_blank_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first line\n\n   \nsecond\u2028same line\r\n", encoding="utf-8")
    records = read_records(path, required=["text"])
    assert records == [{"text": "first line"}, {"text": "second\u2028same line"}]
    assert records.places == ["line 1", "line 4"]


# ------------------------------------------------------------------------------------------------
# records: bad input


@pytest.mark.parametrize("name, content, error, message", [
    ("a.jsonl", '{"text": "ok"}\n{"text": "broken"\n', MalformedRecordError, r"a.jsonl line 2: not valid JSON"),
    ("a.jsonl", '{"text": "ok"}\n\n["a list"]\n', MalformedRecordError, r"a.jsonl line 3: expected a JSON object"),
    ("a.json", '{\n  "data": [\n    {"paragraphs": [}\n  ]\n}\n', MalformedRecordError, r"a.json line 3: not valid JSON"),
    ("a.json", '{"text": "a"}\n{"text": "b"}\n{"text":\n', MalformedRecordError, r"a.json line 3: not valid JSON"),
    ("a.csv", 'text,label\nok,1\n"open,1\n', MalformedRecordError, r"a.csv line 3: unexpected end of data"),
    ("a.jsonl", "", EmptyDataError, r"a.jsonl: the file is empty"),
    ("a.jsonl", "\n  \n", EmptyDataError, r"a.jsonl: the file is empty"),
    ("a.json", "[]", EmptyDataError, r"a.json: no records"),
    ("a.csv", "text,label\n", EmptyDataError, r"a.csv: no records"),
    ("a.csv", "text,label\nfine,1\ntoo,many,fields\n", MalformedRecordError,
     r"a.csv line 3: 3 fields, but the header \(line 1\) has 2"),
    ("a.csv", 'text,tokens\na,"[""x""]"\nb,"[""y"""\n', MalformedRecordError,
     r"a.csv line 3: column 'tokens' holds JSON lists/objects, but this cell is not valid JSON"),
    ("a.csv", "text,text\na,b\n", MalformedRecordError, r"a.csv line 1: the header names \['text'\] twice"),
    ("a.parquet", "x", UnknownFormatError, r"a.parquet: unknown file type '.parquet'; expected one of .jsonl"),
    ("a", "x", UnknownFormatError, r"unknown file type '\(no extension\)'"),
])
def test_bad_files_name_the_file_and_line(tmp_path, name, content, error, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(error, match=message):
        read_records(path, required=["text"])
    assert issubclass(error, DataError) and issubclass(error, ValueError)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(MalformedRecordError, match=r"a.jsonl line 2: not UTF-8"):
        read_records(path, required=["text"])


def test_missing_column_lists_the_columns_present(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"sentence1": "x", "label": 0}, {"sentence1": "y", "lable": 1}])
    with pytest.raises(MissingColumnError,
                       match=r"a.jsonl line 2: no column 'label'; the columns present are 'sentence1', 'lable'"):
        read_records(path, required=["sentence1", "label"])
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("review,stars\ngood,5\n", encoding="utf-8")
    with pytest.raises(MissingColumnError, match=r"a.csv line 2: no column 'sentence1', 'label'; the columns "
                                                 r"present are 'review', 'stars'"):
        read_records(csv_path, required=["sentence1", "label"])


def test_two_columns_renamed_to_one_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "sentence1": "y", "label": 0}])
    with pytest.raises(MalformedRecordError, match=r"a.jsonl line 1: two columns become 'sentence1'"):
        read_records(path, columns={"text": "sentence1"}, required=["sentence1"])


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        read_records(tmp_path / "nowhere.jsonl", required=["text"])


def test_user_columns_replace_the_default_aliases():
    defaults = TASKS["text-classification"].default_columns
    known = set(defaults.values())
    merged = merge_columns(defaults, {"review": "sentence1"}, known, "text-classification")
    assert merged["review"] == "sentence1" and "text" not in merged and merged["label"] == "label"
    with pytest.raises(ValueError, match=r"maps to 'sentnce1', which the task does not read"):
        merge_columns(defaults, {"review": "sentnce1"}, known, "text-classification")


def test_task_read_accepts_the_reference_column_names(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "label": "pos"}])
    assert make_task("text-classification").read(path) == [{"sentence1": "x", "label": "pos"}]
    swag = write_jsonl(tmp_path / "swag.jsonl", [{"ctx": "c", "e0": "a", "e1": "b", "ending2": "d", "label": 0}])
    records = make_task("multiple-choice").read(swag, {"ctx": "sent1", "e0": "ending0", "e1": "ending1"})
    assert records == [{"sent1": "c", "ending0": "a", "ending1": "b", "ending2": "d", "label": 0}]


# ------------------------------------------------------------------------------------------------
# options and label maps


def test_options_from_a_dict_or_a_config_object():
    config = SimpleNamespace(task="question-answering", max_length=64, doc_stride=16, batch_size=8, pack=False)
    options = TaskOptions.of(config)
    assert (options.max_length, options.doc_stride, options.pack, options.max_answer_length) == (64, 16, False, 30)
    task = make_task(config)
    assert task.name == "question-answering" and task.options == options
    assert TaskOptions.of({"max_length": 32}).max_length == 32
    with pytest.raises(TypeError, match=r"unknown task option\(s\) \['max_lenght'\]"):
        TaskOptions.of({"max_lenght": 32})
    with pytest.raises(ValueError, match=r"max_length must be an integer >= 4.*problem_type must be one of"):
        TaskOptions(max_length=2, problem_type="ranking")
    assert set(TASKS) == {"text-classification", "token-classification", "question-answering", "multiple-choice",
                          "masked-lm", "causal-lm"}
    with pytest.raises(ValueError, match="unknown task 'ner'"):
        make_task("ner")


def test_label_maps():
    text = LabelMap.fit(["pos", "neg", "neutral", "pos"])
    assert text.names == ("neg", "neutral", "pos") and text.id("pos") == 2
    ids = LabelMap.fit([2, 0, 1, 1])
    assert ids.names == ("0", "1", "2") and [ids.id(v) for v in (0, 1, 2)] == [0, 1, 2]
    sparse = LabelMap.fit([10, -1, 5])
    assert sparse.names == ("-1", "5", "10") and sparse.id(10) == 2
    flags = LabelMap.fit([True, False])
    assert flags.names == ("False", "True") and 1 not in flags and True in flags
    named = LabelMap.fit([0, 2], names=["O", "B-PER", "I-PER"])
    assert named.names == ("O", "B-PER", "I-PER") and named.id(2) == 2 and named.id("B-PER") == 1
    with pytest.raises(DataError, match="must all be text or all integers"):
        LabelMap.fit(["pos", 1])
    with pytest.raises(DataError, match="no labels"):
        LabelMap.fit([])


# ------------------------------------------------------------------------------------------------
# text classification


def _check_features(features: FeatureSet, pad_id: int = 1) -> None:
    """Sequence arrays padded to one width with their pad values past each feature's length."""
    width = features.max_length
    for key in features.sequence_keys:
        array = features.arrays[key]
        assert array.shape[-1] == width
        flat = array.reshape(-1, width) if array.ndim == 3 else array
        lengths = features.lengths if array.ndim == 2 else features.arrays["attention_mask"].sum(-1).reshape(-1)
        for row, length in zip(flat, lengths, strict=True):
            assert (row[length:] == features.pad_values[key]).all()
    assert features.pad_values["input_ids"] == pad_id and features.pad_values["attention_mask"] == 0


def test_text_classification_single_label_features_and_metrics(tok):
    train = [{"sentence1": s, "label": label} for s, label in
             zip(TRAINING_SENTENCES[:6], ["pos", "neg", "neutral", "pos", "neg", "pos"], strict=True)]
    task = make_task("text-classification", {"max_length": 24})
    task.fit_labels(train)
    assert task.model_config() == {"num_labels": 3, "id2label": {0: "neg", 1: "neutral", 2: "pos"},
                                   "label2id": {"neg": 0, "neutral": 1, "pos": 2},
                                   "problem_type": "single_label_classification"}
    features = task.features(train, tok, "train")
    expected = tok([r["sentence1"] for r in train], truncation=True, max_length=24, padding="max_length")
    np.testing.assert_array_equal(features.arrays["input_ids"], expected["input_ids"])
    assert features.arrays["input_ids"].dtype == np.int32 and features.arrays["labels"].dtype == np.int32
    np.testing.assert_array_equal(features.arrays["labels"], [2, 0, 1, 2, 0, 2])
    np.testing.assert_array_equal(features.lengths, expected["attention_mask"].sum(1))
    np.testing.assert_array_equal(features.example_index, np.arange(6))
    assert features.sequence_keys == ("input_ids", "attention_mask")
    _check_features(features)
    logits = np.eye(3, dtype=np.float32)[[2, 0, 1, 2, 0, 0]]  # the last one wrong
    result = task.evaluate(features, {"logits": logits}, train)
    assert result["accuracy"] == pytest.approx(5 / 6)


def test_text_classification_pairs(tok):
    records = [{"sentence1": "Le café est fermé.", "sentence2": "L'hôtel reste ouvert.", "label": 1},
               {"sentence1": "Привет", "sentence2": "Москва", "label": 0}]
    task = make_task("text-classification", {"max_length": 16})
    task.fit_labels(records)
    features = task.features(records, tok, "train")
    expected = tok([r["sentence1"] for r in records], [r["sentence2"] for r in records], truncation=True,
                   max_length=16, padding="max_length")
    np.testing.assert_array_equal(features.arrays["input_ids"], expected["input_ids"])
    assert task.model_config()["id2label"] == {0: "0", 1: "1"}  # 0..K-1 integers keep their ids
    np.testing.assert_array_equal(features.arrays["labels"], [1, 0])


def test_text_classification_regression_and_multi_label_from_the_labels(tok):
    regression = make_task("text-classification", {"max_length": 16})
    records = [{"sentence1": "a", "label": 0.5}, {"sentence1": "b", "label": 3}]
    regression.fit_labels(records)
    assert regression.model_config()["problem_type"] == "regression"
    assert regression.model_config()["num_labels"] == 1
    features = regression.features(records, tok, "train")
    assert features.arrays["labels"].dtype == np.float32
    np.testing.assert_array_equal(features.arrays["labels"], [0.5, 3.0])
    result = regression.evaluate(features, {"logits": np.array([[0.5], [3.0]])}, records)
    assert result["mse"] == 0.0

    multi = make_task("text-classification", {"max_length": 16})
    records = [{"sentence1": "a", "label": ["sport", "news"]}, {"sentence1": "b", "label": []},
               {"sentence1": "c", "label": ["art"]}]
    multi.fit_labels(records)
    config = multi.model_config()
    assert config["problem_type"] == "multi_label_classification" and config["id2label"] == {0: "art", 1: "news",
                                                                                             2: "sport"}
    features = multi.features(records, tok, "train")
    np.testing.assert_array_equal(features.arrays["labels"], [[0, 1, 1], [0, 0, 0], [1, 0, 0]])
    assert features.arrays["labels"].dtype == np.float32
    logits = np.where(features.arrays["labels"] > 0, 4.0, -4.0)
    assert multi.evaluate(features, {"logits": logits}, records)["accuracy"] == 1.0


def test_unseen_validation_label_names_label_split_file_and_record(tmp_path, tok):
    task = make_task("text-classification")
    train = read_records(write_jsonl(tmp_path / "train.jsonl", [{"sentence1": "a", "label": "pos"},
                                                                 {"sentence1": "b", "label": "neg"}]),
                         required=["sentence1", "label"])
    task.fit_labels(train)
    validation = read_records(write_jsonl(tmp_path / "dev.jsonl", [{"sentence1": "a", "label": "pos"},
                                                                    {"sentence1": "c", "label": "neutral"}]),
                              required=["sentence1", "label"])
    with pytest.raises(UnseenLabelError, match=re.escape(
            f"validation data, {tmp_path / 'dev.jsonl'} line 2 (record 1): label 'neutral' does not occur in the "
            f"training data (training labels: 'neg', 'pos')")):
        task.check_labels(validation, "validation")
    with pytest.raises(UnseenLabelError, match="label 'neutral'"):
        task.features(validation, tok, "validation")


def test_bad_label_kinds_are_named(tmp_path):
    task = make_task("text-classification", {"problem_type": "regression"})
    with pytest.raises(DataError, match=r"train data, record 1: label must be a finite number \(regression\), got str"):
        task.fit_labels([{"sentence1": "a", "label": 1.5}, {"sentence1": "b", "label": "high"}])
    with pytest.raises(DataError, match=r"record 0: label must be a class name or integer id.*got str ''"):
        make_task("text-classification").fit_labels([{"sentence1": "a", "label": ""}])
    with pytest.raises(RuntimeError, match="call fit_labels"):
        make_task("text-classification").model_config()


# ------------------------------------------------------------------------------------------------
# token classification


NER_RECORDS = [
    {"tokens": ["The", "quick", "brown", "fox", "jumps", "over", "Salamanca", "."],
     "ner_tags": ["O", "O", "O", "B-ANIMAL", "O", "O", "B-LOC", "O"]},
    {"tokens": ["Der", "Bürgermeister", "öffnet", "die", "Tür", "für", "Zürich", "und", "Köln"],
     "ner_tags": ["O", "B-PER", "O", "O", "O", "O", "B-LOC", "O", "B-LOC"]},
    {"tokens": ["Москва", "—", "столица", "России"], "ner_tags": ["B-LOC", "O", "O", "B-LOC"]},
    {"tokens": ["São", "Paulo", "está", "cheia"], "ner_tags": ["B-LOC", "I-LOC", "O", "O"]},
    {"tokens": [], "ner_tags": []},
    {"tokens": ["Dvořák", "pisał", "muzykę", "w", "Pradze"], "ner_tags": ["B-PER", "O", "O", "O", "B-LOC"]},
]


@pytest.mark.parametrize("label_all_tokens", [False, True])
@pytest.mark.parametrize("max_length", [64, 12])  # 12 cuts sentences inside a word
def test_token_labels_match_run_ner(tok, ref_tok, label_all_tokens, max_length):
    task = make_task("token-classification", {"max_length": max_length, "label_all_tokens": label_all_tokens})
    task.fit_labels(NER_RECORDS)
    features = task.features(NER_RECORDS, tok, "train")
    label_list = sorted({tag for r in NER_RECORDS for tag in r["ner_tags"]})
    assert task.labels.names == tuple(label_list)
    ids, labels = run_ner_features(ref_tok, NER_RECORDS, label_list, max_length, label_all_tokens)
    assert any(len(row) == max_length for row in ids) == (max_length == 12)
    for row, (ref_ids, ref_labels) in enumerate(zip(ids, labels, strict=True)):
        length = len(ref_ids)
        assert features.lengths[row] == length
        assert features.arrays["input_ids"][row, :length].tolist() == ref_ids
        assert features.arrays["labels"][row, :length].tolist() == ref_labels
    assert features.sequence_keys == ("input_ids", "attention_mask", "labels")
    assert features.pad_values["labels"] == -100
    _check_features(features)


def test_token_word_ids_map_tokens_back_to_words(tok):
    task = make_task("token-classification", {"max_length": 64})
    task.fit_labels(NER_RECORDS)
    features = task.features(NER_RECORDS, tok, "train")
    for row, record in enumerate(NER_RECORDS):
        word_ids = features.meta[row]
        assert word_ids[0] == -1 and (word_ids[features.lengths[row] - 1:] == -1).all()
        inner = word_ids[1:features.lengths[row] - 1]
        assert sorted(set(inner.tolist())) == list(range(len(record["tokens"])))
        pieces = tok(record["tokens"], add_special_tokens=False, return_tensors=None)["input_ids"] if record["tokens"] else []
        assert inner.tolist() == [w for w, p in enumerate(pieces) for _ in p]


def test_token_classification_evaluates_words_by_their_first_token(tok):
    task = make_task("token-classification", {"max_length": 12})
    task.fit_labels(NER_RECORDS)
    features = task.features(NER_RECORDS, tok, "validation")
    k = len(task.labels)
    first = features.arrays["labels"]
    truth = np.where(first >= 0, first, 0)
    logits = np.eye(k, dtype=np.float32)[truth]
    # later sub-tokens say something else: only each word's first token counts
    logits[first == -100] = np.eye(k, dtype=np.float32)[task.labels.id("B-PER")]
    assert task.evaluate(features, {"logits": logits}, NER_RECORDS)["f1"] == 1.0
    # the truncated words are left out of both sides (run_ner's -100): still a perfect score
    assert any(features.lengths == 12)
    wrong = logits.copy()
    row, column = 2, 1  # Москва: B-LOC predicted as O
    wrong[row, column] = np.eye(k)[task.labels.id("O")]
    result = task.evaluate(features, {"logits": wrong}, NER_RECORDS)
    assert result["recall"] < 1.0 and result["precision"] == 1.0


def test_token_classification_bad_records(tok):
    task = make_task("token-classification")
    with pytest.raises(DataError, match=r"train data, record 0: 2 tokens but 1 ner_tags"):
        task.fit_labels([{"tokens": ["a", "b"], "ner_tags": ["O"]}])
    with pytest.raises(DataError, match=r"'tokens' must be a list of words"):
        task.fit_labels([{"tokens": "a b", "ner_tags": ["O", "O"]}])
    task.fit_labels([{"tokens": ["a"], "ner_tags": ["O"]}])
    with pytest.raises(UnseenLabelError, match=r"validation data, record 0: tag 'B-PER' does not occur"):
        task.check_labels([{"tokens": ["a"], "ner_tags": ["B-PER"]}], "validation")


def test_integer_tags_with_label_names(tok):
    task = make_task("token-classification", {"label_names": ["O", "B-LOC", "I-LOC"], "label_all_tokens": True})
    records = [{"tokens": ["São", "Paulo"], "ner_tags": [1, 2]}]
    task.fit_labels(records)
    assert task.model_config()["id2label"] == {0: "O", 1: "B-LOC", 2: "I-LOC"}
    labels = task.features(records, tok, "train").arrays["labels"][0]
    assert labels[1] == 1 and set(labels[2:].tolist()) <= {2, -100}


# ------------------------------------------------------------------------------------------------
# question answering

QA_CONTEXT = " ".join(TRAINING_SENTENCES[:5])


def _qa_record(identifier: str, question: str, answer: str | None, context: str = QA_CONTEXT) -> dict:
    if answer is None:
        return {"id": identifier, "question": question, "context": context, "answers": {"text": [], "answer_start": []}}
    return {"id": identifier, "question": question, "context": context,
            "answers": {"text": [answer], "answer_start": [context.index(answer)]}}


QA_RECORDS = [
    _qa_record("start", "Who jumps?", "quick brown fox"),
    _qa_record("middle", "  Where is the café?", "de la gare"),
    _qa_record("german", "Wer öffnet die Tür?", "Der Bürgermeister"),
    _qa_record("end", "Where did he eat?", "Salamanca"),
    _qa_record("short", "Qui?", "Paulo", context="A praça de São Paulo está cheia."),
]


def test_qa_windows_match_run_qa(tok, ref_tok):
    task = make_task("question-answering", {"max_length": 40, "doc_stride": 12})
    features = task.features(QA_RECORDS, tok, "train")
    reference = run_qa_features(ref_tok, QA_RECORDS, 40, 12)
    assert len(features) == len(reference) > 2 * len(QA_RECORDS)  # long contexts give many windows
    for row, (ids, start, end) in enumerate(reference):
        assert features.arrays["input_ids"][row, :len(ids)].tolist() == ids
        assert (features.arrays["start_positions"][row], features.arrays["end_positions"][row]) == (start, end)
    _check_features(features)


def test_qa_positions_inside_and_outside_windows(tok):
    task = make_task("question-answering", {"max_length": 40, "doc_stride": 12})
    features = task.features(QA_RECORDS, tok, "train")
    starts, ends = features.arrays["start_positions"], features.arrays["end_positions"]
    for row, record_index in enumerate(features.example_index.tolist()):
        record, window = QA_RECORDS[record_index], features.meta[row]
        answer, start_char = record["answers"]["text"][0], record["answers"]["answer_start"][0]
        context_offsets = window.offsets[window.context_start:window.context_end]
        inside = context_offsets[0, 0] <= start_char and context_offsets[-1, 1] >= start_char + len(answer)
        if inside:
            assert window.context_start <= starts[row] <= ends[row] < window.context_end
            span = record["context"][window.offsets[starts[row]][0]:window.offsets[ends[row]][1]]
            assert span == answer
        else:
            assert starts[row] == ends[row] == 0  # <s>
    # every answer is wholly inside at least one window, and some windows hold none
    assert set(features.example_index[starts > 0].tolist()) == set(range(len(QA_RECORDS)))
    assert (starts == 0).any()


def _answer_logits(features: FeatureSet, *, null_rows=()) -> dict[str, np.ndarray]:
    """Logits that point at each window's answer (or at <s> where it has none)."""
    n, width = features.arrays["input_ids"].shape
    start = np.zeros((n, width), np.float32)
    end = np.zeros((n, width), np.float32)
    rows = np.arange(n)
    start[rows, features.arrays["start_positions"]] = 8.0
    end[rows, features.arrays["end_positions"]] = 8.0
    for row in null_rows:
        start[row, 0] = end[row, 0] = 20.0
    return {"start_logits": start, "end_logits": end}


def test_qa_post_processing_returns_the_answer_text(tok):
    task = make_task("question-answering", {"max_length": 40, "doc_stride": 12})
    features = task.features(QA_RECORDS, tok, "validation")
    outputs = _answer_logits(features)
    predictions = task.predictions(features, outputs, QA_RECORDS)
    assert predictions == {r["id"]: r["answers"]["text"][0] for r in QA_RECORDS}
    assert task.evaluate(features, outputs, QA_RECORDS) == {"exact_match": 100.0, "f1": 100.0}
    # an answer longer than max_answer_length tokens cannot be predicted
    spans = features.arrays["end_positions"] - features.arrays["start_positions"] + 1
    assert spans[features.example_index == 0].max() == 3  # ▁quick ▁brown ▁fox
    short = make_task("question-answering", {"max_length": 40, "doc_stride": 12, "max_answer_length": 2})
    assert short.predictions(features, outputs, QA_RECORDS)["start"] in ("quick", "quick brown", "brown fox", "fox")


def test_qa_version_2_null_answers(tok):
    records = [*QA_RECORDS[:2], _qa_record("none", "Who?", None)]
    v1 = make_task("question-answering", {"max_length": 40, "doc_stride": 12})
    with pytest.raises(DataError, match=r"validation data, record 2: the question has no answer; set "
                                        r"version_2_with_negative"):
        v1.features(records, tok, "validation")
    task = make_task("question-answering", {"max_length": 40, "doc_stride": 12, "version_2_with_negative": True})
    features = task.features(records, tok, "validation")
    assert (features.arrays["start_positions"][features.example_index == 2] == 0).all()
    # the no-answer record's windows only score <s>; the first record's null score (the smallest <s>
    # score of its windows: 40) beats its answer's span (16) in every window
    outputs = _answer_logits(features, null_rows=np.flatnonzero(features.example_index == 0))
    predictions = task.predictions(features, outputs, records)
    assert predictions == {"start": "", "middle": "de la gare", "none": ""}
    lenient = make_task("question-answering", {"max_length": 40, "doc_stride": 12, "version_2_with_negative": True,
                                               "null_score_diff_threshold": 30.0})
    assert lenient.predictions(features, outputs, records)["start"] == "quick brown fox"
    result = task.evaluate(features, outputs, records)
    assert result["exact_match"] == pytest.approx(200 / 3)


def test_qa_bad_records(tok):
    task = make_task("question-answering", {"max_length": 16, "doc_stride": 2})
    long_question = _qa_record("q", "Where did the quick brown fox jump over the lazy dog?", "fox")
    with pytest.raises(DataError, match=r"record 1: the question's \d+ tokens leave \d+ of max_length=16"):
        task.features([QA_RECORDS[4], long_question], tok, "train")
    moved = _qa_record("m", "Who?", "Paulo", context="A praça de São Paulo.")
    moved["answers"]["answer_start"] = [3]
    with pytest.raises(DataError, match=r"record 0: the answer 'Paulo' is not at character 3 of the context"):
        task.check_labels([moved], "train")
    with pytest.raises(DataError, match=r"record 1: id 'short' is also the id of record 0"):
        task.check_labels([QA_RECORDS[4], QA_RECORDS[4]], "train")
    with pytest.raises(DataError, match=r"'answers' must be"):
        task.check_labels([{**QA_RECORDS[4], "answers": ["Paulo"]}], "train")


# ------------------------------------------------------------------------------------------------
# multiple choice

SWAG = [
    {"sent1": "Le café de la gare", "sent2": "est", "ending0": "fermé le dimanche.", "ending1": "un chat.",
     "ending2": "bleu.", "ending3": "Москва.", "label": 0},
    {"sent1": "The quick brown fox", "ending0": "sleeps.", "ending1": "jumps over the lazy dog.", "ending2": "no.",
     "ending3": "Zürich und Köln und noch viel mehr Text, der zu lang ist.", "label": 1, "sent2": "then"},
]


def test_multiple_choice_features(tok):
    task = make_task("multiple-choice", {"max_length": 16})
    task.fit_labels(SWAG)
    assert task.num_choices == 4 and task.model_config() == {}
    features = task.features(SWAG, tok, "train")
    assert features.arrays["input_ids"].shape == (2, 4, 16) and features.arrays["attention_mask"].shape == (2, 4, 16)
    first = [r["sent1"] for r in SWAG for _ in range(4)]
    second = [f"{r['sent2']} {r[f'ending{i}']}" for r in SWAG for i in range(4)]
    expected = tok(first, second, truncation=True, max_length=16, padding="max_length")
    np.testing.assert_array_equal(features.arrays["input_ids"].reshape(8, 16), expected["input_ids"])
    np.testing.assert_array_equal(features.lengths, expected["attention_mask"].sum(1).reshape(2, 4).max(1))
    np.testing.assert_array_equal(features.arrays["labels"], [0, 1])
    _check_features(features)
    logits = np.array([[3.0, 0, 0, 0], [0, 0, 5.0, 0]])
    assert task.evaluate(features, {"logits": logits}, SWAG)["accuracy"] == 0.5


def test_multiple_choice_bad_labels_and_endings():
    task = make_task("multiple-choice")
    task.fit_labels(SWAG)
    with pytest.raises(UnseenLabelError, match=r"validation data, record 0: label 4 is not the index of an ending"):
        task.check_labels([{**SWAG[0], "label": 4}], "validation")
    three = {k: v for k, v in SWAG[0].items() if k != "ending3"}
    with pytest.raises(DataError, match=r"record 0: the training data has 4 endings .* this record has ending0, "
                                        r"ending1, ending2"):
        task.check_labels([three], "validation")


# ------------------------------------------------------------------------------------------------
# language modelling

LINES = [{"text": s} for s in TRAINING_SENTENCES[:8]] + [{"text": "   "}] + [{"text": s} for s in TRAINING_SENTENCES[8:12]]


@pytest.mark.parametrize("name", ["masked-lm", "causal-lm"])
def test_packing_fills_every_row(tok, name):
    task = make_task(name, {"max_length": 32})
    features = task.features(LINES, tok, "train")
    ids = features.arrays["input_ids"]
    assert ids.shape[1] == 32 and len(ids) > 3
    assert (features.lengths[:-1] == 32).all() and (ids[:-1] != tok.pad_token_id).all()  # full rows, no padding
    assert (ids[:, 0] == tok.bos_token_id).all()
    # the rows, without their <s>, are the lines' tokens each followed by </s>
    texts = [r["text"] for r in LINES if r["text"].strip()]
    stream = [t for ids_ in tok(texts, add_special_tokens=False, return_tensors=None)["input_ids"] for t in [*ids_, 2]]
    rows = [row[1:length].tolist() for row, length in zip(ids, features.lengths, strict=True)]
    assert [t for row in rows for t in row] == stream
    assert features.example_index[0] == 0 and features.example_index[-1] >= 9  # the blank line 8 is skipped
    _check_features(features)
    if name == "causal-lm":
        labels = features.arrays["labels"]
        np.testing.assert_array_equal(labels[:-1], ids[:-1])
        assert (labels[-1, features.lengths[-1]:] == -100).all() and features.pad_values["labels"] == -100
        assert task.model_config() == {"is_decoder": True}
    else:
        assert set(features.arrays) == {"input_ids", "attention_mask"}
    assert task.evaluate(features, {}, LINES) == {}


def test_one_line_per_row_without_packing(tok):
    task = make_task("masked-lm", {"max_length": 16, "pack": False})
    features = task.features(LINES, tok, "train")
    texts = [r["text"] for r in LINES if r["text"].strip()]
    expected = tok(texts, truncation=True, max_length=16, padding="max_length")
    np.testing.assert_array_equal(features.arrays["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(features.example_index, [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12])
    with pytest.raises(EmptyDataError, match="every train text is blank"):
        task.features([{"text": " "}], tok, "train")


def test_masked_lm_batches_mask_only_text_tokens(tok):
    from xlmr_jax.training.masking import masked_lm_batch

    task = make_task("masked-lm", {"max_length": 32, "mlm_probability": 0.5})
    features = task.features(LINES, tok, "train")
    batch = masked_lm_batch(features.arrays, special_ids=tok.all_special_ids, mask_token_id=tok.mask_token_id,
                            vocab_size=len(tok), rng=np.random.default_rng(0), probability=0.5)
    original, positions, labels = features.arrays["input_ids"], batch["masked_positions"], batch["labels"]
    assert positions.shape == labels.shape and positions.shape[1] <= 32
    chosen = np.zeros(original.shape, bool)
    for row, (where, targets) in enumerate(zip(positions, labels, strict=True)):
        real = where >= 0
        assert (targets[~real] == -100).all() and (np.diff(where[real]) > 0).all()  # in order, then filler
        assert (targets[real] == original[row, where[real]]).all()
        chosen[row, where[real]] = True
    assert chosen.any()
    assert not chosen[np.isin(original, [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id])].any()
    assert (batch["input_ids"][chosen] == tok.mask_token_id).mean() > 0.6
    np.testing.assert_array_equal(batch["input_ids"][~chosen], original[~chosen])