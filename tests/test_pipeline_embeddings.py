"""feature-extraction against `transformers.pipeline("feature-extraction")` and sentence-embeddings
against `sentence_transformers.SentenceTransformer(...).encode` on the same tiny randomised
checkpoints (values within 1e-5): a sentence-transformers checkpoint in its current layout (mean,
Normalize) and in the older one (pooling flags, CLS + max concatenated, max_seq_length), a plain HF
checkpoint, the pooling/normalize overrides; bad input."""

import json
import os
import shutil

import numpy as np
import pytest
import sentence_transformers
import torch
import transformers
from flax import nnx
from reference_models import build_reference, save_reference

import xlmr_jax
from xlmr_jax.demo import TINY_CHECKPOINT

try:  # sentence-transformers >= 6
    from sentence_transformers.sentence_transformer import modules as st_modules
except ImportError:
    from sentence_transformers import models as st_modules

TOKENIZER_FILES = ("sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json")
TEXTS = ["Paris is the capital of France.", "Москва — столица России.", "Der Hund schläft.", "I love it",
         "東京は日本の首都です。", "Le renard brun rapide saute par-dessus le chien paresseux."]
REFERENCE_TOKENIZER = transformers.AutoTokenizer.from_pretrained(TINY_CHECKPOINT)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """(torch XLMRobertaModel, its HF checkpoint directory with the demo tokenizer)."""
    model = build_reference("xlm-roberta", "XLMRobertaModel", seed=4, vocab_size=302, max_position_embeddings=130,
                            type_vocab_size=1)
    directory = save_reference(model, tmp_path_factory.mktemp("encoder"))
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(TINY_CHECKPOINT, name), directory)
    return model, directory


@pytest.fixture(scope="module")
def st_checkpoint(encoder, tmp_path_factory):
    """A sentence-transformers checkpoint (Transformer at the root, mean Pooling, Normalize) as
    sentence-transformers saves it, plus the sentencepiece model our tokenizer reads."""
    _, directory = encoder
    transformer = st_modules.Transformer(directory)
    model = sentence_transformers.SentenceTransformer(modules=[
        transformer, st_modules.Pooling(32, "mean"), st_modules.Normalize()])  # hidden size 32
    saved = str(tmp_path_factory.mktemp("st") / "model")
    model.save(saved)
    shutil.copy(os.path.join(directory, "sentencepiece.bpe.model"), saved)
    return saved


@pytest.fixture(scope="module")
def legacy_st_checkpoint(st_checkpoint, tmp_path_factory):
    """The same weights in sentence-transformers' older layout: `sentence_transformers.models.*` module
    types, one pooling flag per mode (CLS and max: concatenated), no Normalize, max_seq_length 16."""
    saved = str(tmp_path_factory.mktemp("legacy") / "model")
    shutil.copytree(st_checkpoint, saved)
    shutil.rmtree(os.path.join(saved, "2_Normalize"))
    write_json(os.path.join(saved, "modules.json"), [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    write_json(os.path.join(saved, "1_Pooling", "config.json"), {
        "word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": True, "pooling_mode_mean_sqrt_len_tokens": False})
    write_json(os.path.join(saved, "sentence_bert_config.json"), {"max_seq_length": 16, "do_lower_case": False})
    return saved


def write_json(path, value):
    with open(path, "w") as fh:
        json.dump(value, fh)


def read_json(path):
    with open(path) as fh:
        return json.load(fh)


def hidden_states(model, text: str) -> np.ndarray:
    """The reference's last hidden states of one text (no padding), (length, hidden)."""
    ids = REFERENCE_TOKENIZER(text)["input_ids"]
    with torch.no_grad():
        return model(torch.tensor([ids])).last_hidden_state[0].numpy()


def assert_close(mine, theirs):
    mine, theirs = np.asarray(mine), np.asarray(theirs)
    assert mine.dtype == np.float32 and mine.shape == theirs.shape
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5)


# -- feature-extraction ------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["bare encoder", "masked-LM checkpoint"])
def test_feature_extraction_as_the_reference(encoder, which):
    directory = encoder[1] if which == "bare encoder" else TINY_CHECKPOINT  # a head's encoder, head left out
    ours = xlmr_jax.pipeline("feature-extraction", directory)
    theirs = transformers.pipeline("feature-extraction", model=directory)
    mine, reference = ours(TEXTS), theirs(TEXTS)
    assert isinstance(mine, list) and isinstance(mine[0], list) and isinstance(mine[0][0][0][0], float)
    for a, b in zip(mine, reference, strict=True):
        assert_close(np.asarray(a, np.float32), b)
    single = ours(TEXTS[0], return_tensors=True)
    assert isinstance(single, np.ndarray)
    assert_close(single, theirs(TEXTS[0]))


# -- sentence-embeddings -----------------------------------------------------------------------------

def test_sentence_embeddings_equal_sentence_transformers(st_checkpoint):
    ours = xlmr_jax.pipeline("sentence-embeddings", st_checkpoint, batch_size=4)
    theirs = sentence_transformers.SentenceTransformer(st_checkpoint)
    mine = ours(TEXTS)
    assert_close(mine, theirs.encode(TEXTS))
    assert mine.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-6)  # Normalize read from modules.json
    assert_close(ours(TEXTS[2]), theirs.encode(TEXTS[2]))  # one text: one (hidden,) vector
    assert ours([]).shape == (0, 32)


def test_older_layout_concatenated_poolings_and_max_seq_length(legacy_st_checkpoint):
    ours = xlmr_jax.pipeline("sentence-embeddings", legacy_st_checkpoint)
    theirs = sentence_transformers.SentenceTransformer(legacy_st_checkpoint)
    texts = [*TEXTS, "word " * 300]  # cut at max_seq_length 16, as sentence-transformers does
    mine = ours(texts)
    assert mine.shape == (len(texts), 64)  # CLS then max
    assert_close(mine, theirs.encode(texts))


def test_plain_checkpoint_and_overrides(encoder):
    """A checkpoint without modules.json: mean pooling, not normalised (as sentence-transformers does for
    it); pooling= and normalize= override, per call or for the pipeline."""
    model, directory = encoder
    ours = xlmr_jax.pipeline("sentence-embeddings", directory)
    assert_close(ours(TEXTS), sentence_transformers.SentenceTransformer(directory).encode(TEXTS))
    states = [hidden_states(model, text) for text in TEXTS]
    cls_max = np.stack([np.concatenate([h[0], h.max(axis=0)]) for h in states])
    assert_close(ours(TEXTS, pooling=["cls", "max"]), cls_max)
    mean = np.stack([h.mean(axis=0) for h in states])
    assert_close(ours(TEXTS, normalize=True), mean / np.linalg.norm(mean, axis=1, keepdims=True))
    cls = xlmr_jax.pipeline("sentence-embeddings", directory, pooling="cls", normalize=True)
    assert_close(cls(TEXTS[0]), states[0][0] / np.linalg.norm(states[0][0]))


def test_bad_input(encoder, st_checkpoint, tmp_path):
    _, directory = encoder
    ours = xlmr_jax.pipeline("sentence-embeddings", directory)
    with pytest.raises(ValueError, match="pooling must be one of cls, mean, max or a list of them"):
        ours("a", pooling="sum")
    with pytest.raises(ValueError, match="pooling must be one of"):
        ours("a", pooling=[])
    with pytest.raises(TypeError, match="normalize must be a bool"):
        ours("a", normalize="yes")
    with pytest.raises(ValueError, match="max_length must be an integer >= 1 or None"):
        ours("a", max_length=0)
    with pytest.raises(ValueError, match="input 0 is .* tokens, more than the model's 128"):
        ours("word " * 200, max_length=1000)
    with pytest.raises(ValueError, match="input 0 is .* tokens, more than max_length 4; pass truncation=True"):
        ours("Paris is the capital of France.", max_length=4)
    assert ours("Paris is the capital of France.", max_length=4, truncation=True).shape == (32,)
    with pytest.raises(TypeError, match="input 1: the text must be a str"):
        ours(["a", 3])

    def broken(name, edit):
        target = tmp_path / name
        shutil.copytree(st_checkpoint, target)
        edit(str(target))
        return str(target)

    def add_dense(path):
        modules = read_json(os.path.join(path, "modules.json"))
        write_json(os.path.join(path, "modules.json"), [*modules, {
            "idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}])

    with pytest.raises(ValueError, match="the module sentence_transformers.models.Dense is not one this pipeline runs"):
        xlmr_jax.pipeline("sentence-embeddings", broken("dense", add_dense))
    with pytest.raises(ValueError, match="pooling weightedmean is not supported"):
        xlmr_jax.pipeline("sentence-embeddings", broken("weighted", lambda p: write_json(
            os.path.join(p, "1_Pooling", "config.json"), {"embedding_dimension": 32, "pooling_mode": "weightedmean"})))

    def subfolder(path):
        modules = read_json(os.path.join(path, "modules.json"))
        modules[0]["path"] = "0_Transformer"
        write_json(os.path.join(path, "modules.json"), modules)

    with pytest.raises(ValueError, match="the Transformer's weights are in '0_Transformer'"):
        xlmr_jax.pipeline("sentence-embeddings", broken("subfolder", subfolder))
    with pytest.raises(ValueError, match="do_lower_case is true; this pipeline does not lowercase"):
        xlmr_jax.pipeline("sentence-embeddings", broken("lower", lambda p: write_json(
            os.path.join(p, "sentence_bert_config.json"), {"max_seq_length": 128, "do_lower_case": True})))
    with pytest.raises(ValueError, match="no Pooling module"):
        xlmr_jax.pipeline("sentence-embeddings", broken("no-pooling", lambda p: write_json(
            os.path.join(p, "modules.json"), [{"idx": 0, "name": "0", "path": "", "type":
                                             "sentence_transformers.models.Transformer"}])))
    config = xlmr_jax.XLMRobertaConfig.preset("base", vocab_size=302, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=4, intermediate_size=48)
    classifier = nnx.eval_shape(lambda: xlmr_jax.XLMRobertaForSequenceClassification(config))  # no weights needed
    with pytest.raises(TypeError, match="feature-extraction needs a XLMRobertaModel, got a "
                                        "XLMRobertaForSequenceClassification"):
        xlmr_jax.pipeline("feature-extraction", classifier, directory)
    with pytest.raises(ValueError, match="unknown option"):
        xlmr_jax.pipeline("feature-extraction", directory, pooling="mean")
