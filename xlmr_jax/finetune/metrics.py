"""Evaluation metrics for every fine-tuning task, on host arrays after the last eval batch.

Each function takes the whole evaluation set and returns a dict of Python floats:

- `classification_metrics`: accuracy and macro/micro F1 (sklearn's `f1_score` definitions);
- `multilabel_metrics`: exact-match (subset) accuracy and macro/micro F1 over the K labels;
- `regression_metrics`: Pearson, Spearman (average ranks for ties, as scipy) and MSE;
- `entity_metrics`: seqeval's entity-level precision/recall/F1 (default mode) and token accuracy;
- `squad_metrics`: exact match and F1 in percent, as the official SQuAD v1.1/v2.0 evaluation script.

The first three are a few lines of numpy each; entity metrics use seqeval (imported on first use:
it pulls scikit-learn, whose import takes over a second).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

# -- checks at the boundary ----------------------------------------------------------------------

def _integer_vector(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class id per example), got shape {array.shape}")
    if array.size and not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"{name} must hold integer class ids, got dtype {array.dtype}")
    return array.astype(np.int64)


def _same_length(predictions: np.ndarray, labels: np.ndarray, what: str) -> None:
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} must have the same "
                         f"shape ({what})")
    if predictions.shape[0] == 0:
        raise ValueError("no examples: predictions and labels are empty")


def _f1(true_positives, false_positives, false_negatives):
    """F1 = 2TP / (2TP + FP + FN), 0 where the denominator is 0 (sklearn's default zero_division)."""
    numerator = 2.0 * np.asarray(true_positives, dtype=np.float64)
    denominator = numerator + false_positives + false_negatives
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


# -- single-label classification -----------------------------------------------------------------

def classification_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1 and micro F1 of integer class predictions against integer labels.

    Macro F1 is the unweighted mean of the per-class F1 over the classes present in `labels` or
    `predictions` (sklearn's `f1_score(average="macro")` with its default `labels=None`); a class
    that neither contains does not count. Micro F1 pools the counts of all classes; for single-label
    data it equals the accuracy.
    """
    predictions = _integer_vector("predictions", predictions)
    labels = _integer_vector("labels", labels)
    _same_length(predictions, labels, "one class id per example")
    classes = np.union1d(predictions, labels)
    predicted = predictions[:, None] == classes[None, :]
    actual = labels[:, None] == classes[None, :]
    true_positives = (predicted & actual).sum(axis=0)
    false_positives = (predicted & ~actual).sum(axis=0)
    false_negatives = (~predicted & actual).sum(axis=0)
    return {
        "accuracy": float(np.mean(predictions == labels)),
        "f1_macro": float(np.mean(_f1(true_positives, false_positives, false_negatives))),
        "f1_micro": float(_f1(true_positives.sum(), false_positives.sum(), false_negatives.sum())),
    }


# -- multi-label classification ------------------------------------------------------------------

def _indicator_matrix(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a (examples, labels) indicator matrix, got shape {array.shape}")
    if array.dtype != np.bool_:
        if not np.issubdtype(array.dtype, np.number) or not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans or 0/1, got dtype {array.dtype} with other values")
        array = array.astype(bool)
    return array


def multilabel_metrics(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Exact-match accuracy, macro F1 and micro F1 of (N, K) boolean predictions against 0/1 labels.

    `accuracy` counts a row correct only when all K decisions match (sklearn's subset accuracy).
    Macro F1 averages the F1 of every one of the K labels; a label that is neither predicted nor
    true anywhere scores 0, as sklearn's default `zero_division`. Micro F1 pools the counts.
    """
    predicted = _indicator_matrix("predicted", predicted)
    labels = _indicator_matrix("labels", labels)
    _same_length(predicted, labels, "(examples, labels)")
    true_positives = (predicted & labels).sum(axis=0)
    false_positives = (predicted & ~labels).sum(axis=0)
    false_negatives = (~predicted & labels).sum(axis=0)
    return {
        "accuracy": float(np.mean(np.all(predicted == labels, axis=1))),
        "f1_macro": float(np.mean(_f1(true_positives, false_positives, false_negatives))),
        "f1_micro": float(_f1(true_positives.sum(), false_positives.sum(), false_negatives.sum())),
    }


# -- regression ----------------------------------------------------------------------------------

def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    # A constant input has no correlation: nan (scipy warns and gives nan too), never a crash. Tested
    # on the values, not on the centred ones: the mean of equal floats can differ from them by an ulp.
    if len(x) < 2 or (x == x[0]).all() or (y == y[0]).all():
        return float("nan")
    x = x - x.mean()
    y = y - y.mean()
    denominator = np.sqrt(np.dot(x, x)) * np.sqrt(np.dot(y, y))
    return float(np.clip(np.dot(x, y) / denominator, -1.0, 1.0))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with tied values sharing the mean of their ranks (scipy's rankdata 'average')."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank_of_group = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank_of_group, ends - starts)
    return ranks


def regression_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation and mean squared error of float predictions against labels.

    Spearman is the Pearson correlation of average ranks (ties share their mean rank, as
    `scipy.stats.spearmanr`). A constant `predictions` or `labels` (or a single example) has no
    correlation: both correlations are nan, without a warning; so is every metric when a
    prediction is not finite (a diverged model is reported, not raised). Labels must be finite.
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if predictions.ndim != 1:
        raise ValueError(f"predictions must be 1-D (one value per example), got shape {predictions.shape}")
    _same_length(predictions, labels, "one value per example")
    if not np.isfinite(labels).all():
        raise ValueError(f"labels must be finite; {int(np.sum(~np.isfinite(labels)))} are not")
    if not np.isfinite(predictions).all():
        return {"pearson": float("nan"), "spearman": float("nan"), "mse": float("nan")}
    return {
        "pearson": _pearson(predictions, labels),
        "spearman": _pearson(average_ranks(predictions), average_ranks(labels)),
        "mse": float(np.mean((predictions - labels) ** 2)),
    }


# -- entities (token classification) -------------------------------------------------------------

def _tag_sentences(name: str, sentences) -> list[list[str]]:
    # seqeval only flattens a list of *lists*: tuples or arrays would be scored as garbage.
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise TypeError(f"{name} must be a list of sentences, each a list of tag strings")
    result = []
    for index, sentence in enumerate(sentences):
        tags = list(sentence) if not isinstance(sentence, str) else None
        if tags is None or not all(isinstance(tag, str) for tag in tags):
            raise TypeError(f"{name}[{index}] must be a list of tag strings, got {sentence!r:.80}")
        result.append(tags)
    return result


def entity_metrics(true_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]]
                   ) -> dict[str, float]:
    """seqeval's entity-level precision, recall and F1 (micro over entity types) and token accuracy.

    seqeval's default (conlleval-compatible) mode: an entity is a chunk of B-/I-/E-/S- tags of one
    type, so IOB2, IOB1, IOE and IOBES tags are all read as seqeval reads them. No entity on
    either side gives 0 (seqeval's `zero_division=0`, without its warning).
    """
    true_tags = _tag_sentences("true_tags", true_tags)
    predicted_tags = _tag_sentences("predicted_tags", predicted_tags)
    if len(true_tags) != len(predicted_tags):
        raise ValueError(f"true_tags has {len(true_tags)} sentences but predicted_tags has "
                         f"{len(predicted_tags)}")
    for index, (true, predicted) in enumerate(zip(true_tags, predicted_tags, strict=True)):
        if len(true) != len(predicted):
            raise ValueError(f"sentence {index}: {len(true)} true tags but {len(predicted)} predicted tags")
    if not any(true_tags):
        raise ValueError("no tags: every sentence is empty")
    from seqeval.metrics import accuracy_score
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        true_tags, predicted_tags, average="micro", zero_division=0)
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "accuracy": float(accuracy_score(true_tags, predicted_tags))}


# -- extractive question answering (SQuAD) -------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower case, drop punctuation, articles and extra whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact(reference: str, prediction: str) -> float:
    return float(normalize_answer(reference) == normalize_answer(prediction))


def _token_f1(reference: str, prediction: str) -> float:
    reference_tokens = normalize_answer(reference).split()
    prediction_tokens = normalize_answer(prediction).split()
    if not reference_tokens or not prediction_tokens:
        return float(reference_tokens == prediction_tokens)  # no answer: 1 only if both are empty
    common = sum((collections.Counter(reference_tokens) & collections.Counter(prediction_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(prediction_tokens)
    recall = common / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
                  ) -> dict[str, float]:
    """Exact match and token F1 in percent (0-100), as the official SQuAD v2.0 evaluation script.

    Answers are normalised (lower case, punctuation, articles a/an/the and extra whitespace
    removed); each question scores its best reference. A question whose references are empty, or
    all normalise to "" (e.g. [""]), has no answer: it scores 1 when the prediction normalises to
    "" and 0 otherwise. On SQuAD v1.1 data (every question answerable) this is the v1.1 script's
    result. When any question has no answer, "HasAns_exact"/"HasAns_f1" (over answerable
    questions; nan if there are none) and "NoAns_exact"/"NoAns_f1" are returned too.
    Every question needs exactly one prediction, and every prediction a question.
    """
    missing = sorted(set(references) - set(predictions))
    unknown = sorted(set(predictions) - set(references))
    if missing or unknown:
        raise ValueError(f"predictions and references must have the same question ids: "
                         f"{len(missing)} without a prediction (e.g. {missing[:3]}), "
                         f"{len(unknown)} not in references (e.g. {unknown[:3]})")
    if not references:
        raise ValueError("no questions: references is empty")
    exact, f1, has_answer = [], [], []
    for question_id, answers in references.items():
        if isinstance(answers, str):
            raise TypeError(f"references[{question_id!r}] must be a list of answer strings, got a string")
        prediction = predictions[question_id]
        if not isinstance(prediction, str):
            raise TypeError(f"predictions[{question_id!r}] must be a string, got {type(prediction).__name__}")
        answers = [answer for answer in answers if normalize_answer(answer)] or [""]
        exact.append(max(_exact(answer, prediction) for answer in answers))
        f1.append(max(_token_f1(answer, prediction) for answer in answers))
        has_answer.append(answers != [""])
    exact, f1, has_answer = np.array(exact), np.array(f1), np.array(has_answer)
    result = {"exact_match": 100.0 * float(exact.mean()), "f1": 100.0 * float(f1.mean())}
    if not has_answer.all():
        for prefix, subset in (("HasAns", has_answer), ("NoAns", ~has_answer)):
            result[f"{prefix}_exact"] = 100.0 * float(exact[subset].mean()) if subset.any() else float("nan")
            result[f"{prefix}_f1"] = 100.0 * float(f1[subset].mean()) if subset.any() else float("nan")
    return result
