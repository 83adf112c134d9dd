"""The sampler of `generate`, by its draws: a batch of identical prompts gives independent draws of
the first new token, whose frequencies must follow softmax(logits / temperature), restricted to
the top-k / top-p set and renormalised there. Each check is a chi-square test against the
expected distribution, computed from our own forward on the prompt; with a fixed key the draws
are fixed, and the bounds leave a wide margin on both sides (a right distribution scores a
p-value far above 1e-4; the wrong ones checked below score far below 1e-9)."""

import jax
import numpy as np
import pytest
from reference_models import padded_batch
from scipy import stats

import xlmr_jax

DRAWS = 4096  # rows of one batch: the draws of one call
FIT = 1e-4  # a right distribution: p-value above this
MISFIT = 1e-9  # a wrong one: p-value below this


@pytest.fixture(scope="module")
def decoder(reference_checkpoint):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForCausalLM", is_decoder=True)
    model = xlmr_jax.XLMRobertaForCausalLM.from_pretrained(path)
    prompt = padded_batch(np.random.default_rng(6), [4])[0][:, :-1]
    logits = np.asarray(model(prompt).logits[0, -1], np.float64)
    return model, prompt, logits


def draws(model, prompt, key, **sampling):
    """The first new token of DRAWS copies of `prompt`, sampled in one call."""
    out = model.generate(np.repeat(prompt, DRAWS, axis=0), 1, do_sample=True, rng=jax.random.key(key),
                         eos_token_id=None, **sampling)
    return np.asarray(out)[:, -1]


def softmax(logits, temperature=1.0, keep=None):
    z = np.where(keep, logits, -np.inf) if keep is not None else logits
    p = np.exp((z - z.max()) / temperature)
    return p / p.sum()


def fit(tokens, probs) -> float:
    """Chi-square p-value of the draws under `probs`; tokens expected fewer than 5 times share a
    bin. A draw of a token of probability zero gives 0."""
    counts = np.bincount(tokens, minlength=len(probs))
    if np.any(counts[probs == 0]):
        return 0.0
    expected = probs * len(tokens)
    big, small = expected >= 5, (expected > 0) & (expected < 5)
    observed, wanted = counts[big], expected[big]
    if np.any(small):
        observed, wanted = np.append(observed, counts[small].sum()), np.append(wanted, expected[small].sum())
    statistic = float(np.sum((observed - wanted) ** 2 / wanted))
    return float(stats.chi2.sf(statistic, len(wanted) - 1))


def test_frequencies_follow_softmax_of_logits_over_temperature(decoder):
    model, prompt, logits = decoder
    tokens = draws(model, prompt, 0, temperature=2.0)
    assert fit(tokens, softmax(logits, 2.0)) > FIT
    # the sample tells these apart: temperature ignored, or multiplied instead of divided by
    assert fit(tokens, softmax(logits, 1.0)) < MISFIT
    assert fit(tokens, softmax(logits, 0.5)) < MISFIT


def test_different_keys_give_different_draws_and_one_key_the_same(decoder):
    model, prompt, _ = decoder
    a, a_again, b = (draws(model, prompt, key, temperature=2.0) for key in (0, 0, 1))
    np.testing.assert_array_equal(a, a_again)  # the same program on the same key, run twice
    # two independent draws from this distribution agree with probability sum(p^2) ~ 0.02
    assert np.mean(a != b) > 0.8
    assert len(np.unique(a)) > 50  # the rows of one call are not one draw repeated


def test_top_k_draws_stay_in_the_top_k_and_follow_their_softmax(decoder):
    model, prompt, logits = decoder
    k = 4
    ranked = np.sort(logits)[::-1]
    # the top-k set is clear-cut: no near-tie at its edge that rounding could move
    assert ranked[k - 1] - ranked[k] > 1e-2
    top_k = logits >= ranked[k - 1]
    tokens = draws(model, prompt, 2, top_k=k)
    assert set(np.unique(tokens)) == set(np.flatnonzero(top_k))  # inside the set, and all of it drawn
    assert fit(tokens, softmax(logits, keep=top_k)) > FIT
    assert fit(tokens, softmax(logits, 0.5, keep=top_k)) < MISFIT  # the sample resolves a wrong one


def nucleus(logits, p, temperature=1.0):
    """The fewest most likely tokens whose probability under softmax(logits / temperature)
    reaches p, as a mask; asserted clear-cut: its mass is not within rounding of p on either side
    of its edge."""
    order = np.argsort(logits)[::-1]
    cumulative = np.cumsum(softmax(logits, temperature)[order])
    size = int(np.sum(cumulative < p)) + 1
    assert cumulative[size - 2] < p - 5e-3 and cumulative[size - 1] > p + 5e-3
    keep = np.zeros(len(logits), bool)
    keep[order[:size]] = True
    return keep


def test_top_p_draws_stay_in_the_nucleus_and_follow_its_softmax(decoder):
    model, prompt, logits = decoder
    p = 0.48
    keep = nucleus(logits, p)
    assert 3 <= keep.sum() <= 20
    tokens = draws(model, prompt, 3, top_p=p)
    assert set(np.unique(tokens)) == set(np.flatnonzero(keep))  # inside the nucleus, and all of it drawn
    assert fit(tokens, softmax(logits, keep=keep)) > FIT
    # with a temperature, the nucleus is taken from softmax(logits / temperature): a wider one here
    hot = nucleus(logits, p, temperature=2.0)
    assert hot.sum() > keep.sum() + 3
    tokens = draws(model, prompt, 4, top_p=p, temperature=2.0)
    assert set(np.unique(tokens)) == set(np.flatnonzero(hot))
    assert fit(tokens, softmax(logits, 2.0, keep=hot)) > FIT


def test_each_step_draws_with_a_new_key(decoder):
    """At a high temperature the draws are nearly uniform: a step that reused the previous step's
    key would mostly repeat its token, while fresh keys repeat it about once in 99."""
    model, prompt, _ = decoder
    out = np.asarray(model.generate(np.repeat(prompt, 64, axis=0), 8, do_sample=True, temperature=100.0,
                                    rng=jax.random.key(5), eos_token_id=None))[:, 3:]
    assert np.mean(out[:, 1:] == out[:, :-1]) < 0.05
    assert len(np.unique(out)) > 80
