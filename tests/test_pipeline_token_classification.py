"""token-classification against `transformers.pipeline("token-classification")` on the same random
checkpoint: the same entities (label, word, start, end, index) for every aggregation strategy, scores
within 1e-5; ignore_labels, long texts (truncated, or windows with stride), bad input."""

import shutil
import warnings

import pytest
import torch
import transformers

import xlmr_jax
from tests.reference_models import build_reference, save_reference
from xlmr_jax.demo import TINY_CHECKPOINT
from xlmr_jax.demo.corpus import SENTENCES

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "MISC"]  # MISC: a label without a B-/I- prefix
STRATEGIES = ["none", "simple", "first", "average", "max"]
TEXTS = [
    *SENTENCES[:4], SENTENCES[9], SENTENCES[13], SENTENCES[15], SENTENCES[16],
    "Emoji 😀 and <mask> inside,  double  spaces\tand a tab.",  # <unk> tokens take the text's characters
    "",
]
LONG_TEXT = " ".join(SENTENCES)  # several windows of the model's 128 tokens


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 302-token tiny model with every weight random. The classifier is scaled up (labels then vary
    from token to token) and its bias set so that every label is common on TEXTS, "O" the most:
    entities then span several tokens and words, and some are ignored."""
    model = build_reference("xlm-roberta", "XLMRobertaForTokenClassification", seed=0, vocab_size=302,
                            max_position_embeddings=130, num_labels=len(LABELS),
                            id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})
    batch = transformers.AutoTokenizer.from_pretrained(TINY_CHECKPOINT)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        model.classifier.weight.mul_(8.0)
        mean_logits = model(**batch).logits[batch["attention_mask"].bool()].mean(0)
        model.classifier.bias.sub_(mean_logits - torch.tensor([1.5, 0.0, 0.5, 0.0, 0.5, 0.0]))
    directory = save_reference(model, tmp_path_factory.mktemp("token-classification"))
    for name in ("sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{TINY_CHECKPOINT}/{name}", directory)
    return directory


@pytest.fixture(scope="module")
def ours(checkpoint):
    return xlmr_jax.pipeline("token-classification", checkpoint, batch_size=4)


@pytest.fixture(scope="module")
def reference(checkpoint):
    return transformers.pipeline("token-classification", model=checkpoint)


def run_reference(reference, texts, **options):
    with warnings.catch_warnings():  # "Tokenizer does not support real words, using fallback heuristic"
        warnings.simplefilter("ignore", UserWarning)
        return reference(texts, **options)


def assert_same(mine, theirs):
    """Entity lists equal key for key; scores within 1e-5 (two computations), the rest exact."""
    assert isinstance(mine, list) and len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        if isinstance(b, list):
            assert_same(a, b)
            continue
        assert sorted(a) == sorted(b)
        for key in b:
            if key == "score":
                assert abs(a["score"] - float(b["score"])) <= 1e-5
            else:
                assert a[key] == b[key], (key, a, b)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_entities_as_the_reference_pipeline(ours, reference, strategy):
    mine = ours(TEXTS, aggregation_strategy=strategy)
    theirs = run_reference(reference, TEXTS, aggregation_strategy=strategy)
    assert_same(mine, theirs)
    found = [entity for entities in mine for entity in entities]
    key = "entity" if strategy == "none" else "entity_group"
    assert {entity[key] for entity in found} >= ({"B-PER", "I-PER", "B-LOC", "I-LOC", "MISC"} if strategy == "none"
                                                 else {"PER", "LOC", "MISC"})
    if strategy != "none":  # groups of several tokens, and (with word strategies) whole words
        assert any(len(entity["word"]) > 3 for entity in found)


@pytest.mark.parametrize("strategy", ["none", "simple", "average"])
def test_ignore_labels(ours, reference, strategy):
    for labels in ([], ["O", "MISC", "I-PER"]):
        mine = ours(TEXTS[:5], aggregation_strategy=strategy, ignore_labels=labels)
        assert_same(mine, run_reference(reference, TEXTS[:5], aggregation_strategy=strategy, ignore_labels=labels))
    everything = ours(TEXTS[1], ignore_labels=[])
    assert [entity["index"] for entity in everything] == list(range(1, len(everything) + 1))


def test_long_text_truncated_or_in_windows(ours, reference):
    assert len(ours.tokenizer.encode(LONG_TEXT)) > 3 * ours.max_length
    assert_same([ours(LONG_TEXT, aggregation_strategy="simple")],
                [run_reference(reference, LONG_TEXT, aggregation_strategy="simple")])
    for strategy, stride in (("simple", 16), ("first", 40), ("max", 0)):
        mine = ours(LONG_TEXT, aggregation_strategy=strategy, stride=stride)
        assert_same([mine], [run_reference(reference, LONG_TEXT, aggregation_strategy=strategy, stride=stride)])
        assert mine[-1]["end"] > len(LONG_TEXT) - 60  # the whole text was read


def test_single_text_alias_and_options_at_construction(checkpoint, ours):
    ner = xlmr_jax.pipeline("ner", checkpoint, aggregation_strategy="SIMPLE", ignore_labels=["O", "MISC"])
    result = ner(TEXTS[1])
    assert isinstance(result, list) and all(isinstance(entity, dict) for entity in result)
    assert_same(result, ours(TEXTS[1], aggregation_strategy="simple", ignore_labels=("O", "MISC")))
    assert all(entity["entity_group"] in {"PER", "LOC"} for entity in result)
    assert ours([]) == []


def test_bad_input_is_named(ours):
    with pytest.raises(ValueError, match="aggregation_strategy must be one of none, simple, first, average, max"):
        ours(TEXTS[0], aggregation_strategy="longest")
    with pytest.raises(ValueError, match="stride needs an aggregation_strategy other than 'none'"):
        ours(TEXTS[0], stride=8)
    with pytest.raises(ValueError, match="stride=126 must be smaller than the 126 text tokens"):
        ours(TEXTS[0], stride=126, aggregation_strategy="first")
    with pytest.raises(ValueError, match="ignore_labels must be a list of label names"):
        ours(TEXTS[0], ignore_labels="O")
    with pytest.raises(TypeError, match="input 1: the text must be a str, got NoneType"):
        ours(["a", None])
    with pytest.raises(ValueError, match="unknown option"):
        ours(TEXTS[0], aggregation="simple")
    with pytest.raises(ValueError, match="token-classification needs a checkpoint of XLMRobertaForTokenClassification"):
        xlmr_jax.pipeline("ner", TINY_CHECKPOINT)
