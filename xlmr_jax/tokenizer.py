"""Public tokenizer entry point: ``from xlmr_jax.tokenizer import XLMRobertaTokenizer``.

The implementation lives in :mod:`xlmr_jax.tokenization`.
"""

from xlmr_jax.tokenization import BatchEncoding, SpecialTokens, XLMRobertaTokenizer

__all__ = ["BatchEncoding", "SpecialTokens", "XLMRobertaTokenizer"]
