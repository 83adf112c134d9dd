"""Decoder mode: causal masking, KV cache, cross-attention, generation, against the reference."""

import inspect

import jax
import numpy as np
import pytest
import torch
from parity import assert_attention_close, assert_close, assert_greedy_choices
from reference_models import padded_batch

import xlmr_jax

LAYOUTS = ["xlm-roberta", "xlm-roberta-xl"]
DECODER = {"is_decoder": True}
CROSS = {"is_decoder": True, "add_cross_attention": True}


def load(reference_checkpoint, layout, overrides):
    ref, path = reference_checkpoint(layout, "XLMRobertaForCausalLM", **overrides)
    return ref, xlmr_jax.XLMRobertaForCausalLM.from_pretrained(path)


def full_rows(rng, batch, length):
    ids, _ = padded_batch(rng, [length] * batch)
    return ids


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cached_steps_equal_full_forward_and_reference_past(reference_checkpoint, layout):
    ref, ours = load(reference_checkpoint, layout, DECODER)
    ids = full_rows(np.random.default_rng(0), 2, 9)
    full = ours(ids)
    # prefill 4 tokens, then 1 token at a time, in a cache with room to spare
    cache = ours.init_cache(batch_size=2, max_length=12)
    mask = np.zeros((2, 12), np.int32)
    mask[:, :9] = 1
    out = ours(ids[:, :4], mask, cache=cache)
    step_logits = [out.logits]
    for t in range(4, 9):
        out = ours(ids[:, t:t + 1], mask, cache=out.cache)
        step_logits.append(out.logits)
    assert int(out.cache.index) == 9
    assert_close("cached logits vs full forward", np.concatenate(step_logits, axis=1), full.logits)

    with torch.no_grad():
        first = ref(torch.tensor(ids[:, :4]), use_cache=True)
        past = getattr(first, "past_key_values", None) or first.cache
        # transformers >= 5.2x names it `cache` (`past_key_values` goes in 5.40); older releases the other way
        cache_argument = "cache" if "cache" in inspect.signature(type(ref).forward).parameters else "past_key_values"
        second = ref(torch.tensor(ids[:, 4:]), **{cache_argument: past}, use_cache=True)
    assert_close("logits with past_key_values", np.concatenate(step_logits[1:], axis=1), second.logits)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_causal_mask_with_padding_matches_reference(reference_checkpoint, layout):
    ref, ours = load(reference_checkpoint, layout, DECODER)
    ids, mask = padded_batch(np.random.default_rng(1), [8, 5, 2])
    with torch.no_grad():
        expected = ref(torch.tensor(ids), attention_mask=torch.tensor(mask), output_attentions=True)
    got = ours(ids, mask, output_attentions=True)
    assert_close("logits", got.logits, expected.logits, mask)
    for i, (a, b) in enumerate(zip(got.attentions, expected.attentions, strict=True)):
        assert_attention_close(f"attentions[{i}]", a, b, mask)
        # causal: nothing above the diagonal
        assert float(np.abs(np.triu(np.asarray(a), k=1)).max()) == 0.0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cross_attention_matches_reference(reference_checkpoint, layout):
    ref, ours = load(reference_checkpoint, layout, CROSS)
    rng = np.random.default_rng(2)
    ids, mask = padded_batch(rng, [7, 4])
    encoder_states = rng.normal(size=(2, 6, 32)).astype(np.float32)
    encoder_mask = np.array([[1] * 6, [1] * 3 + [0] * 3])
    with torch.no_grad():
        expected = ref(torch.tensor(ids), attention_mask=torch.tensor(mask),
                       encoder_hidden_states=torch.tensor(encoder_states),
                       encoder_attention_mask=torch.tensor(encoder_mask), output_attentions=True)
    got = ours(ids, mask, encoder_hidden_states=encoder_states, encoder_attention_mask=encoder_mask,
               output_attentions=True)
    assert_close("logits", got.logits, expected.logits, mask)
    assert len(got.cross_attentions) == len(expected.cross_attentions)
    for i, (a, b) in enumerate(zip(got.cross_attentions, expected.cross_attentions, strict=True)):
        assert_attention_close(f"cross_attentions[{i}]", a, b, mask)

    # cached decoding with the encoder keys/values projected once by init_cache
    cache = ours.init_cache(2, 7, encoder_hidden_states=encoder_states)
    step_mask = np.zeros((2, 7), np.int32)
    step_mask[:, :] = 1
    full = ours(ids, step_mask, encoder_hidden_states=encoder_states, encoder_attention_mask=encoder_mask)
    out = ours(ids[:, :3], step_mask, cache=cache, encoder_attention_mask=encoder_mask)
    logits = [out.logits]
    for t in range(3, 7):
        out = ours(ids[:, t:t + 1], step_mask, cache=out.cache, encoder_attention_mask=encoder_mask)
        logits.append(out.logits)
    assert_close("cached cross-attention decoding", np.concatenate(logits, axis=1), full.logits)


def reference_logits(ref, sequences: np.ndarray) -> np.ndarray:
    """The reference's full forward on finished sequences (batch, length), no padding: positions
    come from the ids as in the reference (a generated pad id sits at the pad position)."""
    with torch.no_grad():
        return ref(torch.tensor(np.asarray(sequences, np.int64))).logits.numpy()


# Not `ref.generate` as the reference: in transformers 5.x it passes 0-based position ids
# (cumsum(mask) - 1) to XLM-R, whose positions start at pad_token_id + 1. And not token ids
# compared with the reference's own greedy decoding: two computations may break a near-tie of two
# logits differently (parity.GREEDY_TOLERANCE). Each token we generate must instead be a greedy
# choice of the reference's forward run on our own sequence (teacher forcing).
@pytest.mark.parametrize("layout", LAYOUTS)
def test_greedy_generate_is_greedy_under_reference_forward(reference_checkpoint, layout):
    ref, ours = load(reference_checkpoint, layout, DECODER)
    prompt = full_rows(np.random.default_rng(3), 2, 5)[:, :-1]
    got = np.asarray(ours.generate(prompt, 6, eos_token_id=None))
    assert got.shape == (2, 10)
    np.testing.assert_array_equal(got[:, :4], prompt)
    assert_greedy_choices("greedy generate", got, reference_logits(ref, got), start=4)


def test_left_padded_prompts_generate_as_if_alone(reference_checkpoint):
    """Each row of a left-padded batch continues greedily as its own unpadded prompt would: every
    new token is a greedy choice of the reference's forward on that row without its padding."""
    ref, ours = load(reference_checkpoint, "xlm-roberta", DECODER)
    rng = np.random.default_rng(4)
    long_prompt = full_rows(rng, 1, 6)[0, :-1]
    short_prompt = full_rows(rng, 1, 4)[0, :-1]
    batch = np.ones((3, 5), np.int64)  # pad id 1, left padding
    mask = np.zeros((3, 5), np.int64)
    batch[0], mask[0] = long_prompt, 1
    batch[1, 2:], mask[1, 2:] = short_prompt, 1
    batch[2, 1:], mask[2, 1:] = long_prompt[1:], 1
    together = np.asarray(ours.generate(batch, 6, attention_mask=mask, eos_token_id=None))
    np.testing.assert_array_equal(together[:, :5], batch)
    for row in range(3):
        alone = together[row][np.concatenate([mask[row], np.ones(6, np.int64)]).astype(bool)]
        prompt_length = int(mask[row].sum())
        assert_greedy_choices(f"row {row} (prompt of {prompt_length})", alone[None],
                              reference_logits(ref, alone[None]), start=prompt_length)


def test_eos_stops_each_row_on_its_own_and_pads_after(reference_checkpoint):
    """Sampled rows reach the end of sequence at different steps: each row emits pad ids from the
    step after its own first EOS on, while the rows that have not stopped go on."""
    _, ours = load(reference_checkpoint, "xlm-roberta", DECODER)
    pad = ours.config.pad_token_id
    prompt = full_rows(np.random.default_rng(5), 16, 4)[:, :-1]
    eos = 19  # this model's most likely token after these prompts (greedy picks it first)
    new = np.asarray(ours.generate(prompt, 8, do_sample=True, rng=jax.random.key(3), eos_token_id=eos))[:, 3:]
    is_eos = new == eos
    stops = np.where(is_eos.any(axis=1), is_eos.argmax(axis=1), new.shape[1])  # first EOS per row
    for row, stop in enumerate(stops):
        assert np.all(new[row, stop + 1:] == pad), f"row {row}: tokens after its EOS at step {stop}: {new[row]}"
    # what makes the checks above bite: rows that stop early (a pad id is expected after each of
    # several steps), rows that stop at different steps, and rows still going after another stopped
    assert np.sum(stops <= new.shape[1] - 3) >= 2, f"too few early stops: {stops}"
    assert len(set(stops.tolist())) >= 3, f"rows stop together: {stops}"
    going = [row for row in range(len(stops)) if stops[row] > stops.min() + 1]
    assert going and np.any(new[going, stops.min() + 1] != pad), "no row went on after the first stop"


def test_sampling_is_reproducible_and_top_k_1_is_greedy(reference_checkpoint):
    ref, ours = load(reference_checkpoint, "xlm-roberta", DECODER)
    prompt = full_rows(np.random.default_rng(6), 2, 4)[:, :-1]
    key = jax.random.key(7)
    a = np.asarray(ours.generate(prompt, 5, do_sample=True, rng=key, eos_token_id=None))
    b = np.asarray(ours.generate(prompt, 5, do_sample=True, rng=key, eos_token_id=None))
    np.testing.assert_array_equal(a, b)  # the same program on the same key, run twice
    # keeping only the best token (by rank, or by a tiny nucleus) leaves no choice but the greedy one
    top1 = np.asarray(ours.generate(prompt, 5, do_sample=True, top_k=1, rng=key, eos_token_id=None))
    assert_greedy_choices("top_k=1", top1, reference_logits(ref, top1), start=3)
    nucleus = np.asarray(ours.generate(prompt, 5, do_sample=True, top_p=1e-6, rng=key, eos_token_id=None))
    assert_greedy_choices("top_p=1e-6", nucleus, reference_logits(ref, nucleus), start=3)


def test_generate_rejects_bad_arguments(reference_checkpoint):
    _, ours = load(reference_checkpoint, "xlm-roberta", DECODER)
    prompt = np.array([[0, 5, 6]])
    with pytest.raises(ValueError, match="left-padded"):
        ours.generate(prompt, 2, attention_mask=np.array([[1, 1, 0]]))
    with pytest.raises(ValueError, match="rng"):
        ours.generate(prompt, 2, do_sample=True)
    with pytest.raises(ValueError, match="exceeds"):
        ours.generate(prompt, 100)
    with pytest.raises(ValueError, match="max_new_tokens"):
        ours.generate(prompt, 0)


def test_causal_lm_requires_decoder_config(reference_checkpoint):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    with pytest.raises(ValueError, match="is_decoder"):
        xlmr_jax.XLMRobertaForCausalLM.from_pretrained(path, is_decoder=False)
    model = xlmr_jax.XLMRobertaForCausalLM.from_pretrained(path, is_decoder=True)
    assert model.config.is_decoder
