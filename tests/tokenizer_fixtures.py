"""Shared pytest fixtures for the tokenizer tests, loaded with ``pytest_plugins`` by each test module.

The reference is ``transformers.XLMRobertaTokenizer`` from transformers v5: the only XLM-R
tokenizer class v5 has, backed by the Rust ``tokenizers`` library (v5 dropped the sentencepiece
"slow" class). It must be built with ``from_pretrained(directory)``: v5's
``XLMRobertaTokenizer(vocab_file=...)`` does not convert the model and yields a 5-token vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm
import transformers
from tokenizer_corpus import train_model

from xlmr_jax.tokenizer import XLMRobertaTokenizer


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_model(tmp_path_factory.mktemp("xlmr_tokenizer"))


@pytest.fixture(scope="session")
def tok(tok_dir: Path) -> XLMRobertaTokenizer:
    return XLMRobertaTokenizer.from_pretrained(tok_dir)


@pytest.fixture(scope="session")
def ref_tok(tok_dir: Path) -> transformers.PreTrainedTokenizerBase:
    transformers.logging.set_verbosity_error()
    tokenizer = transformers.XLMRobertaTokenizer.from_pretrained(str(tok_dir))
    assert len(tokenizer) > 100, "the reference did not convert the sentencepiece model"
    return tokenizer


@pytest.fixture(scope="session")
def spm_model(tok_dir: Path) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(tok_dir / "sentencepiece.bpe.model"))
