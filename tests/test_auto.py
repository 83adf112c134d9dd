"""Auto classes and the top-level tokenizer, as the reference's documentation uses them."""

import numpy as np
import pytest
import torch
import transformers

import xlmr_jax
from xlmr_jax.demo import TINY_CHECKPOINT


def test_the_reference_docs_masked_lm_snippet_prints_the_same_token():
    tokenizer = xlmr_jax.AutoTokenizer.from_pretrained(TINY_CHECKPOINT)
    model = xlmr_jax.AutoModelForMaskedLM.from_pretrained(TINY_CHECKPOINT)
    inputs = tokenizer("Bonjour, je suis un modèle <mask>.")
    predictions = model(**inputs).logits
    masked_index = np.where(inputs["input_ids"] == tokenizer.mask_token_id)[1]
    ours = tokenizer.decode(np.asarray(predictions)[0, masked_index].argmax(-1))

    ref_tokenizer = transformers.AutoTokenizer.from_pretrained(TINY_CHECKPOINT)
    ref_model = transformers.AutoModelForMaskedLM.from_pretrained(TINY_CHECKPOINT)
    ref_inputs = ref_tokenizer("Bonjour, je suis un modèle <mask>.", return_tensors="pt")
    with torch.no_grad():
        ref_logits = ref_model(**ref_inputs).logits
    ref_index = torch.where(ref_inputs["input_ids"] == ref_tokenizer.mask_token_id)[1]
    # The same token; the argmax of two computations, so the reference's top logit must beat the
    # second by more than the two computations can differ (else the test would be a coin toss).
    top2 = torch.topk(ref_logits[0, ref_index], 2).values[0]
    assert float(top2[0] - top2[1]) > 1e-4
    assert ours == ref_tokenizer.decode(ref_logits[0, ref_index].argmax(-1))


@pytest.mark.parametrize("auto, cls", [
    (xlmr_jax.AutoModel, xlmr_jax.XLMRobertaModel),
    (xlmr_jax.AutoModelForMaskedLM, xlmr_jax.XLMRobertaForMaskedLM),
    (xlmr_jax.AutoModelForSequenceClassification, xlmr_jax.XLMRobertaForSequenceClassification),
])
def test_auto_classes_give_their_class_with_the_class_options(auto, cls):
    model = auto.from_pretrained(TINY_CHECKPOINT, seed=1)
    assert type(model) is cls
    assert type(auto.from_config(model.config)) is cls
    with pytest.raises(TypeError, match="use .*from_pretrained"):
        auto()


def test_tokenizer_at_the_top_level():
    assert xlmr_jax.XLMRobertaTokenizer is type(xlmr_jax.AutoTokenizer.from_pretrained(TINY_CHECKPOINT))


def test_a_checkpoint_of_another_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="not an XLM-RoBERTa model"):
        xlmr_jax.AutoModel.from_pretrained(tmp_path)
