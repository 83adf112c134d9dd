"""A checkpoint with only `tokenizer.json` (as `transformers` saves it): the sentencepiece model
rebuilt from it is the original one, so ids, offsets and decoding are the same."""

import json
import random
import shutil

import pytest
import sentencepiece as spm
import transformers
from tokenizer_corpus import TRAINING_SENTENCES

from xlmr_jax.tokenization import tokenizer_json
from xlmr_jax.tokenizer import XLMRobertaTokenizer

pytest_plugins = ["tokenizer_fixtures"]


@pytest.fixture(scope="module")
def json_only_dir(tok_dir, tmp_path_factory):
    """What transformers writes (tokenizer.json + tokenizer_config.json), no sentencepiece model."""
    directory = tmp_path_factory.mktemp("json-only")
    transformers.AutoTokenizer.from_pretrained(str(tok_dir)).save_pretrained(str(directory))
    assert (directory / "tokenizer.json").is_file() and not (directory / "sentencepiece.bpe.model").exists()
    return directory


def test_the_rebuilt_model_has_the_original_pieces_and_scores(json_only_dir, spm_model):
    rebuilt = spm.SentencePieceProcessor()
    rebuilt.LoadFromSerializedProto(tokenizer_json.sentencepiece_model_bytes(json_only_dir / "tokenizer.json"))
    assert rebuilt.get_piece_size() == spm_model.get_piece_size()
    for i in range(spm_model.get_piece_size()):
        assert rebuilt.id_to_piece(i) == spm_model.id_to_piece(i)
        assert rebuilt.get_score(i) == spm_model.get_score(i)  # stored floats, read back: exact
        assert rebuilt.is_control(i) == spm_model.is_control(i) and rebuilt.is_unknown(i) == spm_model.is_unknown(i)


def test_same_ids_offsets_and_decoding_as_from_the_sentencepiece_file(json_only_dir, tok):
    ours = XLMRobertaTokenizer.from_pretrained(json_only_dir)
    rng = random.Random(0)
    texts = list(TRAINING_SENTENCES) + ["Bonjour, je suis un modèle <mask>.", "ﬁ ½ Ⅻ  e\u0301", ""]
    texts += ["".join(rng.choice(TRAINING_SENTENCES[0] + " \t\u3000!") for _ in range(30)) for _ in range(50)]
    a = ours(texts, return_offsets_mapping=True, padding=True)
    b = tok(texts, return_offsets_mapping=True, padding=True)
    assert a["input_ids"].tolist() == b["input_ids"].tolist()
    assert a["offset_mapping"].tolist() == b["offset_mapping"].tolist()
    assert ours.mask_token_id == tok.mask_token_id and ours.vocab_size == tok.vocab_size
    assert ours.batch_decode(a["input_ids"]) == tok.batch_decode(b["input_ids"])


def test_a_tokenizer_json_of_another_kind_is_refused(json_only_dir, tmp_path):
    spec = json.loads((json_only_dir / "tokenizer.json").read_text(encoding="utf-8"))
    spec["model"]["type"] = "BPE"
    shutil.copytree(json_only_dir, tmp_path / "bpe")
    (tmp_path / "bpe" / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer.json: expected a Unigram model"):
        XLMRobertaTokenizer.from_pretrained(tmp_path / "bpe")
    with pytest.raises(FileNotFoundError, match="or tokenizer.json"):
        XLMRobertaTokenizer.from_pretrained(tmp_path / "empty-dir-that-is-missing")
