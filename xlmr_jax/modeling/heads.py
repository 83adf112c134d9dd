"""Task heads, named like the reference (`lm_head`, `classifier`, `qa_outputs`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlmr_jax.config import XLMRobertaConfig
from xlmr_jax.modeling.layers import LayerNorm, dense, dropout, exact_gelu, fold_key


class XLMRobertaLMHead(nnx.Module):
    """dense -> exact GELU -> layer_norm -> decoder (tied to the word embeddings) + `bias`.

    The bias is added once; the reference's `lm_head.decoder.bias` is an alias of it. With
    `tie_word_embeddings=False` the decoder has its own kernel and bias."""

    def __init__(self, config: XLMRobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h = config.hidden_size
        self.dense = dense(h, h, config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layer_norm = LayerNorm(h, config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)
        if not config.tie_word_embeddings:
            # Untied (transformers v5): the decoder owns its weight AND bias; `lm_head.bias` stays a
            # parameter of the checkpoint but no longer enters the logits.
            self.decoder = dense(h, config.vocab_size, config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((config.vocab_size,), param_dtype))
        self.tied = config.tie_word_embeddings
        self.dtype = dtype

    def transform(self, features: jax.Array) -> jax.Array:
        """Everything before the vocabulary projection (what fill-mask needs at mask positions)."""
        return self.layer_norm(exact_gelu(self.dense(features)))

    def project(self, x: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        """Vocabulary logits, accumulated and returned in float32 under any compute dtype (a loss
        on logits rounded to bf16 would be off by up to half a bf16 step per logit)."""
        if self.tied:
            kernel, bias, spec = word_embeddings, self.bias[...], "...h,vh->...v"
        else:
            kernel, bias, spec = self.decoder.kernel[...], self.decoder.bias[...], "...h,hv->...v"
        logits = jnp.einsum(spec, x, kernel.astype(self.dtype), preferred_element_type=jnp.float32)
        return logits + bias.astype(jnp.float32)

    def __call__(self, features: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        return self.project(self.transform(features), word_embeddings)


class XLMRobertaClassificationHead(nnx.Module):
    """Sentence head on `<s>`: dropout -> dense -> tanh -> dropout -> out_proj (no pooler)."""

    def __init__(self, config: XLMRobertaConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        h = config.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dense = dense(h, h, config, **kw)
        self.out_proj = dense(h, config.num_labels, config, **kw)
        self.dropout_rate = config.classifier_dropout_rate

    def __call__(self, features, *, dropout_rng, deterministic):
        x = dropout(features[:, 0], self.dropout_rate, fold_key(dropout_rng, 0), deterministic)
        x = jnp.tanh(self.dense(x))
        x = dropout(x, self.dropout_rate, fold_key(dropout_rng, 1), deterministic)
        return self.out_proj(x)
