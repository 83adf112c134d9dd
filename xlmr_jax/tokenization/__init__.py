"""XLM-RoBERTa tokenization: sentencepiece segmentation with fairseq's id layout."""

from xlmr_jax.tokenization.batch_encoding import BatchEncoding
from xlmr_jax.tokenization.tokenizer import XLMRobertaTokenizer
from xlmr_jax.tokenization.vocab import SpecialTokens

__all__ = ["BatchEncoding", "SpecialTokens", "XLMRobertaTokenizer"]
