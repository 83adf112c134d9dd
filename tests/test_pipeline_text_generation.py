"""text-generation on a decoder checkpoint: every generated token is a greedy choice of the
reference's forward on the sequence itself (teacher forcing: two computations, so a tolerance), the
text is the prompt plus the decoded continuation, sampling is reproducible, bad input is named."""

import shutil

import numpy as np
import pytest
import torch
from parity import assert_greedy_choices
from reference_models import build_reference, save_reference

import xlmr_jax
from xlmr_jax.demo import TINY_CHECKPOINT
from xlmr_jax.demo.corpus import SENTENCES

PROMPTS = ["Paris is", "Москва — столица", "Der Hund schläft im Garten und", "東京"]


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    ref = build_reference("xlm-roberta", "XLMRobertaForCausalLM", is_decoder=True, vocab_size=302,
                          max_position_embeddings=64)
    directory = save_reference(ref, tmp_path_factory.mktemp("decoder"))
    for name in ("sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{TINY_CHECKPOINT}/{name}", directory)
    return ref, directory


def test_greedy_continuations_under_the_reference_forward(decoder):
    ref, directory = decoder
    generator = xlmr_jax.pipeline("text-generation", directory, max_new_tokens=6, batch_size=2)
    ids = generator(PROMPTS, return_tensors=True)
    texts = generator(PROMPTS)
    for prompt, [tokens], [text] in zip(PROMPTS, ids, texts, strict=True):
        sequence = np.asarray(tokens["generated_token_ids"])[None]
        prompt_ids = generator.tokenizer.encode(prompt, add_special_tokens=False)
        assert sequence[0, :len(prompt_ids)].tolist() == prompt_ids
        with torch.no_grad():
            logits = ref(torch.tensor(sequence)).logits.numpy()
        assert_greedy_choices(prompt, sequence, logits, start=len(prompt_ids))
        new = generator.tokenizer.decode(sequence[0, len(prompt_ids):], skip_special_tokens=True)
        assert text["generated_text"] == prompt + new
    continuations = generator(PROMPTS, return_full_text=False)  # the same batches: the same tokens
    for prompt, [text], [continuation] in zip(PROMPTS, texts, continuations, strict=True):
        assert text["generated_text"] == prompt + continuation["generated_text"]


def test_sampling_is_reproducible_by_seed(decoder):
    _, directory = decoder
    generator = xlmr_jax.pipeline("text-generation", directory, max_new_tokens=8, do_sample=True, top_p=0.95)
    texts = [s[:20] for s in SENTENCES[:5]]
    first = generator(texts, return_tensors=True, seed=3)
    assert generator(texts, return_tensors=True, seed=3) == first  # the same program and key: the same draws
    assert generator(texts, return_tensors=True, seed=4) != first


def test_bad_input_is_named(decoder):
    _, directory = decoder
    generator = xlmr_jax.pipeline("text-generation", directory, max_new_tokens=4)
    with pytest.raises(ValueError, match="prompt 1 has no token to continue"):
        generator(["ok", ""])
    with pytest.raises(ValueError, match="prompt 0 is .* tokens; with max_new_tokens=4 the model takes at most 58"):
        generator(" ".join(SENTENCES))
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
        generator("ok", max_new_tokens=0)
    with pytest.raises(ValueError, match="text-generation needs a checkpoint of XLMRobertaForCausalLM"):
        xlmr_jax.pipeline("text-generation", TINY_CHECKPOINT)
