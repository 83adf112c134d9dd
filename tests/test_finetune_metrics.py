"""Fine-tuning metrics against sklearn, scipy, seqeval and the official SQuAD v2.0 script."""

import collections
import math
import re
import string
import warnings

import numpy as np
import pytest
import scipy.stats
import seqeval.metrics
import sklearn.metrics

from xlmr_jax.finetune.metrics import (
    average_ranks,
    classification_metrics,
    entity_metrics,
    multilabel_metrics,
    normalize_answer,
    regression_metrics,
    squad_metrics,
)


@pytest.fixture(autouse=True)
def no_warnings():
    """Our metrics never warn (sklearn/scipy/seqeval do on degenerate input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- classification ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_classification_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 200)
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 7, 200))  # 5, 6 only predicted
    got = classification_metrics(predictions, labels)
    assert set(got) == {"accuracy", "f1_macro", "f1_micro"}
    assert got["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(labels, predictions), abs=1e-12)
    assert got["f1_macro"] == pytest.approx(
        sklearn.metrics.f1_score(labels, predictions, average="macro"), abs=1e-12)
    assert got["f1_micro"] == pytest.approx(
        sklearn.metrics.f1_score(labels, predictions, average="micro"), abs=1e-12)


def test_classification_hand_made():
    # class 0: TP 1, FN 1 -> F1 2/3; class 1: TP 1, FP 1 -> 2/3; class 2 only predicted: F1 0.
    got = classification_metrics(np.array([0, 1, 1, 2]), np.array([0, 0, 1, 3]))
    assert got["accuracy"] == 0.5
    assert got["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 0) / 4)
    assert got["f1_micro"] == 0.5
    assert all(isinstance(value, float) for value in got.values())


def test_classification_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        classification_metrics(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="integer class ids"):
        classification_metrics(np.array([0.5, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(np.array([], dtype=int), np.array([], dtype=int))
    with pytest.raises(ValueError, match="1-D"):
        classification_metrics(np.zeros((2, 3), dtype=int), np.zeros((2, 3), dtype=int))


# -- multi-label ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_multilabel_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random((50, 6)) < 0.3
    labels[:, 4] = False  # a label neither true nor predicted anywhere scores 0, as sklearn
    predicted = np.where(rng.random((50, 6)) < 0.8, labels, ~labels)
    predicted[:, 4] = False
    predicted[:10] = labels[:10]  # some exact rows
    got = multilabel_metrics(predicted, labels.astype(np.int32))
    assert got["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(labels, predicted), abs=1e-12)
    for average in ("macro", "micro"):
        expected = sklearn.metrics.f1_score(labels, predicted, average=average, zero_division=0)
        assert got[f"f1_{average}"] == pytest.approx(expected, abs=1e-12)


def test_multilabel_hand_made_and_errors():
    got = multilabel_metrics(np.array([[True, False], [True, True]]), np.array([[1, 0], [0, 1]]))
    # label 0: TP 1 FP 1 -> 2/3; label 1: TP 1 -> 1; micro: TP 2 FP 1 -> 4/5
    assert got == pytest.approx({"accuracy": 0.5, "f1_macro": (2 / 3 + 1) / 2, "f1_micro": 0.8})
    with pytest.raises(ValueError, match="0/1"):
        multilabel_metrics(np.array([[True]]), np.array([[2]]))
    with pytest.raises(ValueError, match="indicator matrix"):
        multilabel_metrics(np.array([True]), np.array([1]))


# -- regression ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_regression_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    labels = np.round(rng.random(100) * 5)  # STS-B-like scores with many ties
    predictions = np.round(labels + rng.normal(size=100), 1)
    got = regression_metrics(predictions.astype(np.float32), labels)
    predictions = predictions.astype(np.float32).astype(np.float64)
    assert got["pearson"] == pytest.approx(scipy.stats.pearsonr(predictions, labels)[0], abs=1e-12)
    assert got["spearman"] == pytest.approx(scipy.stats.spearmanr(predictions, labels)[0], abs=1e-12)
    assert got["mse"] == pytest.approx(np.mean((predictions - labels) ** 2), rel=1e-12)


def test_average_ranks_match_scipy():
    values = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0])
    np.testing.assert_array_equal(average_ranks(values), scipy.stats.rankdata(values, method="average"))
    np.testing.assert_array_equal(average_ranks(np.array([2.0, 2.0, 1.0])), [2.5, 2.5, 1.0])


def test_regression_hand_made():
    got = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 4.0, 9.0, 16.0]))
    assert got["spearman"] == pytest.approx(1.0, abs=1e-12)  # monotone
    assert got["pearson"] == pytest.approx(25 / math.sqrt(5 * 129), abs=1e-12)  # Sxy / sqrt(Sxx Syy)
    assert got["mse"] == pytest.approx((0 + 4 + 36 + 144) / 4)


def test_regression_constant_or_diverged_gives_nan_without_warning():
    # 0.1 three times: the float mean is not 0.1, so a check on centred values would see a slope.
    got = regression_metrics(np.array([0.1, 0.1, 0.1]), np.array([1.0, 2.0, 3.0]))
    assert math.isnan(got["pearson"]) and math.isnan(got["spearman"])
    assert got["mse"] == pytest.approx(np.mean((0.1 - np.array([1.0, 2.0, 3.0])) ** 2))
    got = regression_metrics(np.array([1.0, 2.0]), np.array([5.0, 5.0]))
    assert math.isnan(got["pearson"]) and math.isnan(got["spearman"])
    got = regression_metrics(np.array([1.0]), np.array([2.0]))
    assert math.isnan(got["pearson"]) and got["mse"] == 1.0
    got = regression_metrics(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0, 3.0]))
    assert all(math.isnan(value) for value in got.values())
    with pytest.raises(ValueError, match="labels must be finite"):
        regression_metrics(np.array([1.0, 2.0]), np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="same shape"):
        regression_metrics(np.array([1.0, 2.0]), np.array([1.0]))


# -- entities ------------------------------------------------------------------------------------

def _seqeval(true_tags, predicted_tags):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on tags it does not read as entities
        return {"precision": seqeval.metrics.precision_score(true_tags, predicted_tags),
                "recall": seqeval.metrics.recall_score(true_tags, predicted_tags),
                "f1": seqeval.metrics.f1_score(true_tags, predicted_tags),
                "accuracy": seqeval.metrics.accuracy_score(true_tags, predicted_tags)}


def test_entities_seqeval_documentation_example():
    true_tags = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    predicted_tags = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    got = entity_metrics(true_tags, predicted_tags)
    assert got == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.8})
    # tuples and arrays are read as lists (seqeval itself would mis-score tuples)
    as_tuples = entity_metrics([tuple(s) for s in true_tags], [np.array(s) for s in predicted_tags])
    assert as_tuples == got


@pytest.mark.parametrize("scheme", ["IOB2", "IOB1", "IOE", "IOBES"])
def test_entities_match_seqeval_on_random_tags(scheme):
    prefixes = {"IOB2": "BI", "IOB1": "BI", "IOE": "IE", "IOBES": "BIES"}[scheme]
    rng = np.random.default_rng(len(scheme))
    tags = ["O"] + [f"{prefix}-{kind}" for prefix in prefixes for kind in ("PER", "LOC", "ORG")]
    true_tags, predicted_tags = [], []
    for _ in range(40):
        n = int(rng.integers(1, 15))
        true = [tags[i] for i in rng.integers(0, len(tags), n)]
        predicted = [tag if rng.random() < 0.7 else tags[rng.integers(0, len(tags))] for tag in true]
        true_tags.append(true)
        predicted_tags.append(predicted)
    assert entity_metrics(true_tags, predicted_tags) == pytest.approx(_seqeval(true_tags, predicted_tags),
                                                                        abs=1e-12)


def test_entities_iob1_and_iobes_hand_made():
    # IOB1: "I-PER I-PER" is one entity and "B-PER" after it starts another: true PER(0-1), PER(2),
    # LOC(4); predicted PER(0-2), LOC(4): only LOC matches.
    true_tags = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]
    predicted_tags = [["I-PER", "I-PER", "I-PER", "O", "I-LOC"]]
    got = entity_metrics(true_tags, predicted_tags)
    assert got["precision"] == pytest.approx(1 / 2) and got["recall"] == pytest.approx(1 / 3)
    assert got["f1"] == pytest.approx(0.4)
    assert got["accuracy"] == pytest.approx(4 / 5)
    got = entity_metrics([["S-LOC", "B-PER", "E-PER"]], [["S-LOC", "B-PER", "I-PER"]])
    assert got == pytest.approx(_seqeval([["S-LOC", "B-PER", "E-PER"]], [["S-LOC", "B-PER", "I-PER"]]))


def test_entities_none_anywhere_and_errors():
    assert entity_metrics([["O", "O"]], [["O", "O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                          "accuracy": 1.0}
    with pytest.raises(ValueError, match="sentence 1: 2 true tags but 1 predicted"):
        entity_metrics([["O"], ["O", "B-PER"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 sentences"):
        entity_metrics([["O"], ["O"]], [["O"]])
    with pytest.raises(TypeError, match="list of tag strings"):
        entity_metrics(["O B-PER"], ["O O"])
    with pytest.raises(TypeError, match="list of tag strings"):
        entity_metrics([[0, 1]], [[0, 1]])
    with pytest.raises(TypeError, match="list of sentences"):
        entity_metrics("O", "O")


# -- SQuAD ---------------------------------------------------------------------------------------
# The official SQuAD v2.0 evaluation script's scoring, as published (evaluate-v2.0.py).

def _official_normalize_answer(s):
    def remove_articles(text):
        regex = re.compile(r"\b(a|an|the)\b", re.UNICODE)
        return re.sub(regex, " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def _official_get_tokens(s):
    if not s:
        return []
    return _official_normalize_answer(s).split()


def _official_compute_exact(a_gold, a_pred):
    return int(_official_normalize_answer(a_gold) == _official_normalize_answer(a_pred))


def _official_compute_f1(a_gold, a_pred):
    gold_toks = _official_get_tokens(a_gold)
    pred_toks = _official_get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def _official_scores(predictions, references):
    exact, f1, has_answer = {}, {}, {}
    for qid, answers in references.items():
        has_answer[qid] = bool(answers)
        gold_answers = [a for a in answers if _official_normalize_answer(a)] or [""]
        exact[qid] = max(_official_compute_exact(a, predictions[qid]) for a in gold_answers)
        f1[qid] = max(_official_compute_f1(a, predictions[qid]) for a in gold_answers)
    result = {"exact_match": 100.0 * sum(exact.values()) / len(exact), "f1": 100.0 * sum(f1.values()) / len(f1)}
    if not all(has_answer.values()):
        for prefix, wanted in (("HasAns", True), ("NoAns", False)):
            ids = [qid for qid in references if has_answer[qid] == wanted]
            result[f"{prefix}_exact"] = 100.0 * sum(exact[q] for q in ids) / len(ids)
            result[f"{prefix}_f1"] = 100.0 * sum(f1[q] for q in ids) / len(ids)
    return result


def test_normalize_answer_hand_made():
    assert normalize_answer("The  Cat, sat on a MAT!") == "cat sat on mat"
    assert normalize_answer("an Apple-pie") == "applepie"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert normalize_answer(" ...the ") == ""


def test_squad_hand_made():
    references = {"q1": ["a cat sat on the mat", "dog"], "q2": ["Denver Broncos"], "q3": ["1990"]}
    predictions = {"q1": "the cat sat", "q2": "denver broncos.", "q3": "in 1991"}
    got = squad_metrics(predictions, references)
    # q1: best is F1 2/3 (tokens cat sat vs cat sat on mat); q2 exact; q3 nothing in common.
    assert got == pytest.approx({"exact_match": 100 / 3, "f1": 100 * (2 / 3 + 1) / 3})


def test_squad_v2_unanswerable():
    references = {"a": ["Paris"], "b": [], "c": [""], "d": [], "e": ["the"]}
    predictions = {"a": "paris", "b": "", "c": "London", "d": "the", "e": ""}
    got = squad_metrics(predictions, references)
    # b: no answer predicted -> 1; c: [""] is no answer, predicted London -> 0; d: "the" normalises
    # to "" -> 1 (the official script's normalisation); e: a reference that normalises to "" is none.
    assert got == pytest.approx({"exact_match": 80.0, "f1": 80.0, "HasAns_exact": 100.0, "HasAns_f1": 100.0,
                                 "NoAns_exact": 75.0, "NoAns_f1": 75.0})
    only_unanswerable = squad_metrics({"x": "", "y": "no"}, {"x": [], "y": []})
    assert only_unanswerable["exact_match"] == 50.0 and math.isnan(only_unanswerable["HasAns_f1"])


def test_squad_matches_official_script_on_random_answers():
    rng = np.random.default_rng(0)
    words = ["The", "a", "an", "cat", "Cat", "dog,", "dog", "sat", "on", "mat.", "mat", "1990", "-", "'s", ""]

    def phrase():
        return " ".join(words[i] for i in rng.integers(0, len(words), rng.integers(0, 5)))

    references = {f"q{i}": [phrase() for _ in range(rng.integers(1, 4))] for i in range(300)}
    predictions = {qid: (answers[0] if rng.random() < 0.3 else phrase()) for qid, answers in references.items()}
    got = squad_metrics(predictions, references)
    expected = _official_scores(predictions, {qid: [a for a in answers if _official_normalize_answer(a)]
                                              for qid, answers in references.items()})
    assert "NoAns_f1" in got
    assert got == pytest.approx(expected, abs=1e-9)


def test_squad_rejects_mismatched_ids():
    with pytest.raises(ValueError, match="1 without a prediction"):
        squad_metrics({"a": "x"}, {"a": ["x"], "b": ["y"]})
    with pytest.raises(ValueError, match="1 not in references"):
        squad_metrics({"a": "x", "c": "z"}, {"a": ["x"]})
    with pytest.raises(TypeError, match="list of answer strings"):
        squad_metrics({"a": "x"}, {"a": "x"})
    with pytest.raises(TypeError, match="must be a string"):
        squad_metrics({"a": None}, {"a": ["x"]})
    with pytest.raises(ValueError, match="references is empty"):
        squad_metrics({}, {})
