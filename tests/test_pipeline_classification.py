"""text-classification and zero-shot-classification against `transformers.pipeline` on the same tiny
randomised checkpoints: the same labels in the same order and the same result structure, scores
within 1e-5; texts, pairs (a cross-encoder reranker), top_k, function_to_apply, the problem type's
default, NLI label layouts; bad input."""

import json
import os
import shutil

import pytest
import transformers
from reference_models import build_reference, save_reference

import xlmr_jax
from xlmr_jax.demo import TINY_CHECKPOINT

TOKENIZER_FILES = ("sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json")
SENTIMENT = {0: "negative", 1: "neutral", 2: "positive"}
NLI = {0: "contradiction", 1: "neutral", 2: "entailment"}

TEXTS = ["Paris is the capital of France.", "Москва — столица России.", "Der Hund schläft.", "I love it",
         "東京は日本の首都です。"]
PAIRS = [{"text": "capital of France", "text_pair": "Paris is the capital of France."},
         {"text": "capital of France", "text_pair": "Der Hund schläft."},
         {"text": "Hund", "text_pair": "Der Hund schläft."}]


def tiny_classifier(directory, id2label: dict[int, str], seed: int) -> str:
    """A randomised XLMRobertaForSequenceClassification saved with the demo tokenizer (302 pieces)."""
    model = build_reference("xlm-roberta", "XLMRobertaForSequenceClassification", seed=seed, vocab_size=302,
                            max_position_embeddings=130, type_vocab_size=1, num_labels=len(id2label),
                            id2label=id2label, label2id={v: k for k, v in id2label.items()})
    save_reference(model, directory)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(TINY_CHECKPOINT, name), directory)
    return str(directory)


def relabelled(source: str, directory, id2label: dict[int, str]) -> str:
    """The same weights under other label names (config.json rewritten)."""
    shutil.copytree(source, directory)
    path = os.path.join(directory, "config.json")
    with open(path) as fh:
        config = json.load(fh)
    config.update(id2label={str(k): v for k, v in id2label.items()}, label2id={v: k for k, v in id2label.items()})
    with open(path, "w") as fh:
        json.dump(config, fh)
    return str(directory)


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    directory = tiny_classifier(tmp_path_factory.mktemp("sentiment"), SENTIMENT, seed=1)
    return (xlmr_jax.pipeline("text-classification", directory),
            transformers.pipeline("text-classification", model=directory), directory)


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    directory = tiny_classifier(tmp_path_factory.mktemp("reranker"), {0: "LABEL_0"}, seed=2)
    return (xlmr_jax.pipeline("text-classification", directory),
            transformers.pipeline("text-classification", model=directory))


@pytest.fixture(scope="module")
def nli(tmp_path_factory):
    directory = tiny_classifier(tmp_path_factory.mktemp("nli"), NLI, seed=3)
    return (xlmr_jax.pipeline("zero-shot-classification", directory),
            transformers.pipeline("zero-shot-classification", model=directory), directory)


def assert_same(mine, theirs):
    """The same structure, keys, labels and label order; scores within 1e-5 (two computations)."""
    if isinstance(theirs, list):
        assert isinstance(mine, list) and len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            assert_same(a, b)
        return
    assert isinstance(mine, dict) and sorted(mine) == sorted(theirs)
    for key, value in theirs.items():
        if key == "score":
            assert abs(mine[key] - value) <= 1e-5
        elif key == "scores":
            assert len(mine[key]) == len(value) and max(abs(a - b) for a, b in zip(mine[key], value)) <= 1e-5
        else:
            assert mine[key] == value


# -- text-classification -----------------------------------------------------------------------------

def test_texts_as_the_reference(sentiment):
    ours, reference, _ = sentiment
    assert_same(ours(TEXTS[0]), reference(TEXTS[0]))  # the top label, a single text's inside a list
    assert_same(ours(TEXTS), reference(TEXTS))
    for top_k in (None, 2, 1):
        assert_same(ours(TEXTS, top_k=top_k), reference(TEXTS, top_k=top_k))
        assert_same(ours(TEXTS[1], top_k=top_k), reference(TEXTS[1], top_k=top_k))
    for function in ("sigmoid", "softmax", "none", "SOFTMAX"):
        assert_same(ours(TEXTS, top_k=None, function_to_apply=function),
                    reference(TEXTS, top_k=None, function_to_apply=function))
    assert_same(ours(TEXTS, function_to_apply="default", top_k=None), reference(TEXTS, top_k=None))
    scores = [r["score"] for r in ours(TEXTS[3], top_k=None)]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3


def test_top_k_given_to_the_factory(sentiment):
    directory = sentiment[2]
    ours = xlmr_jax.pipeline("text-classification", directory, top_k=2)
    theirs = transformers.pipeline("text-classification", model=directory, top_k=2)
    assert_same(ours(TEXTS[0]), theirs(TEXTS[0]))  # the reference's quirk: a list in a list
    assert_same(ours(TEXTS[:3]), theirs(TEXTS[:3]))
    assert_same(ours(TEXTS[0], top_k=None), theirs(TEXTS[0], top_k=None))
    assert type(xlmr_jax.pipeline("sentiment-analysis", directory)) is type(ours)  # the reference's alias


def test_pairs_as_the_reference(sentiment):
    ours, reference, _ = sentiment
    assert_same(ours(PAIRS[0]), reference(PAIRS[0]))  # one pair: one dict, as the reference
    assert_same(ours(PAIRS), reference(PAIRS))
    assert_same(ours(PAIRS, top_k=None), reference(PAIRS, top_k=None))
    assert_same(ours({"text": TEXTS[0]}), reference({"text": TEXTS[0]}))


def test_reranker_scores_pairs_with_a_sigmoid(reranker):
    ours, reference = reranker
    mine = ours(PAIRS)
    assert_same(mine, reference(PAIRS))
    assert all(r["label"] == "LABEL_0" and 0 < r["score"] < 1 for r in mine)
    assert_same(ours(PAIRS, function_to_apply="none"), reference(PAIRS, function_to_apply="none"))


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression"])
def test_the_problem_type_sets_the_default_function(sentiment, problem_type):
    _, _, directory = sentiment
    model = xlmr_jax.XLMRobertaForSequenceClassification.from_pretrained(directory, problem_type=problem_type)
    ours = xlmr_jax.pipeline("text-classification", model, directory)
    theirs = transformers.pipeline("text-classification", model=directory,
                                   model_kwargs={"problem_type": problem_type})
    assert_same(ours(TEXTS[:2], top_k=None), theirs(TEXTS[:2], top_k=None))


def test_text_classification_bad_input(sentiment):
    ours, _, _ = sentiment
    with pytest.raises(ValueError, match=r'input 0 is a list: to classify a text pair, send a dict \{"text"'):
        ours([["a question", "a passage"]])
    with pytest.raises(ValueError, match=r"input 1: a text pair is a dict .* got one with the keys \['pair', 'text'\]"):
        ours([PAIRS[0], {"text": "a", "pair": "b"}])
    with pytest.raises(TypeError, match="input 0: the text pair must be a str"):
        ours({"text": "a", "text_pair": 3})
    with pytest.raises(ValueError, match="function_to_apply must be one of default, sigmoid, softmax, none; got 'relu'"):
        ours("a", function_to_apply="relu")
    with pytest.raises(ValueError, match="top_k must be an integer >= 1 or None"):
        ours("a", top_k=0)
    with pytest.raises(ValueError, match="input 0 is .* tokens, more than the model's 128"):
        ours("word " * 200)
    assert ours("word " * 200, truncation=True)[0]["label"] in SENTIMENT.values()
    with pytest.raises(ValueError, match="text-classification needs a checkpoint of "
                                         "XLMRobertaForSequenceClassification; .* holds XLMRobertaForMaskedLM"):
        xlmr_jax.pipeline("text-classification", TINY_CHECKPOINT)


# -- zero-shot-classification ------------------------------------------------------------------------

def test_zero_shot_as_the_reference(nli):
    ours, reference, _ = nli
    labels = ["politics", "sport", "cooking"]
    assert_same(ours(TEXTS[0], candidate_labels=labels), reference(TEXTS[0], candidate_labels=labels))
    assert_same(ours(TEXTS, candidate_labels=labels), reference(TEXTS, candidate_labels=labels))
    assert_same(ours(TEXTS[:2], candidate_labels=labels, multi_label=True),
                reference(TEXTS[:2], candidate_labels=labels, multi_label=True))
    assert_same(ours(TEXTS[2], candidate_labels=["sport"]), reference(TEXTS[2], candidate_labels=["sport"]))
    assert_same(ours(TEXTS[3], "sport, cooking"), reference(TEXTS[3], "sport, cooking"))
    template = "Das ist {}."
    assert_same(ours(TEXTS[2], candidate_labels=labels, hypothesis_template=template),
                reference(TEXTS[2], candidate_labels=labels, hypothesis_template=template))
    long_text = "word " * 200  # the text is cut, never the hypothesis, as the reference does
    assert_same(ours(long_text, candidate_labels=labels), reference(long_text, candidate_labels=labels))


def test_zero_shot_entailment_first(nli, tmp_path):
    """Another NLI label layout (entailment first, contradiction last): the same ids as the reference."""
    _, _, directory = nli
    other = relabelled(directory, tmp_path / "nli", {0: "ENTAILMENT", 1: "neutral", 2: "contradiction"})
    ours = xlmr_jax.pipeline("zero-shot-classification", other)
    theirs = transformers.pipeline("zero-shot-classification", model=other)
    labels = ["politics", "sport"]
    for multi_label in (False, True):
        assert_same(ours(TEXTS[:2], candidate_labels=labels, multi_label=multi_label),
                    theirs(TEXTS[:2], candidate_labels=labels, multi_label=multi_label))


def test_zero_shot_bad_input(nli, sentiment):
    ours, _, _ = nli
    with pytest.raises(ValueError, match="give candidate_labels"):
        ours(TEXTS[0])
    with pytest.raises(ValueError, match="candidate_labels is empty"):
        ours(TEXTS[0], candidate_labels=[])
    with pytest.raises(ValueError, match="candidate_labels is empty"):
        ours(TEXTS[0], candidate_labels=" , ")
    with pytest.raises(TypeError, match="candidate_labels must be a list of str"):
        ours(TEXTS[0], candidate_labels=[1, 2])
    with pytest.raises(ValueError, match="hypothesis_template .* has no place for the label"):
        ours(TEXTS[0], candidate_labels=["a"], hypothesis_template="This example.")
    with pytest.raises(TypeError, match="multi_label must be a bool"):
        ours(TEXTS[0], candidate_labels=["a"], multi_label="yes")
    with pytest.raises(ValueError, match="unable to understand extra arguments"):
        ours(TEXTS[0], ["a"], ["b"])
    _, _, not_nli = sentiment
    with pytest.raises(ValueError, match='needs an NLI model: no label of .*config.json starts with "entail"'):
        xlmr_jax.pipeline("zero-shot-classification", not_nli)
    with pytest.raises(ValueError, match="zero-shot-classification needs a checkpoint of "
                                         "XLMRobertaForSequenceClassification"):
        xlmr_jax.pipeline("zero-shot-classification", TINY_CHECKPOINT)
