"""fill-mask against `transformers.pipeline("fill-mask")` on the same checkpoint: the same tokens,
strings and sequences, scores within 1e-5; several masks, targets, truncation, bad input."""

import numpy as np
import pytest
import transformers

import xlmr_jax
from xlmr_jax.demo import TINY_CHECKPOINT
from xlmr_jax.demo.corpus import SENTENCES

TEXTS = [
    "Paris is the capital of <mask>.",
    "Москва — <mask> России.",
    "<mask> est la capitale de la France, une très belle ville au bord de la Seine.",
    "Der Hund <mask> im Garten und die Katze schläft <mask> dem Sofa.",
    "東京は日本の<mask>です。",
]


@pytest.fixture(scope="module")
def ours():
    return xlmr_jax.pipeline("fill-mask", TINY_CHECKPOINT, batch_size=4)


@pytest.fixture(scope="module")
def reference():
    return transformers.pipeline("fill-mask", model=TINY_CHECKPOINT)


def assert_same(mine, theirs):
    """Results equal key for key; scores within 1e-5 (two computations), everything else exact."""
    if isinstance(theirs, list):
        assert isinstance(mine, list) and len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            assert_same(a, b)
        return
    assert sorted(mine) == sorted(theirs)
    assert mine["token"] == theirs["token"] and mine["token_str"] == theirs["token_str"]
    assert mine["sequence"] == theirs["sequence"]
    assert abs(mine["score"] - theirs["score"]) <= 1e-5


def test_same_predictions_as_the_reference_pipeline(ours, reference):
    assert_same(ours(TEXTS, top_k=4), [reference(text, top_k=4) for text in TEXTS])
    assert_same(ours(TEXTS[0]), reference(TEXTS[0]))  # one text in, one result out; top_k 5 by default


def test_targets(ours, reference):
    targets = ["▁la", "▁de", "s", "▁the"]
    assert_same(ours(TEXTS[2], targets=targets, top_k=3), reference(TEXTS[2], targets=targets, top_k=3))


def first_prediction(result) -> dict:
    return result[0] if isinstance(result[0], dict) else result[0][0]


def test_results_in_input_order_whatever_the_batching(ours):
    """Sorted by length, bucketed and batched in any composition, each text gets its own answer."""
    texts = [TEXTS[i % len(TEXTS)] + " " + SENTENCES[i % len(SENTENCES)] for i in range(11)]
    together = [first_prediction(r) for r in ours(texts, top_k=1)]
    alone = [first_prediction(ours(text, top_k=1)) for text in texts]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a["score"], b["score"], atol=1e-5)
        assert a["sequence"].replace(a["token_str"], "") == b["sequence"].replace(b["token_str"], "")


def test_bad_input_is_named(ours):
    with pytest.raises(ValueError, match=r"text 1 has no mask token \(<mask>\)"):
        ours(["a <mask>", "no mask here"])
    with pytest.raises(ValueError, match="text 0 has no mask token"):
        ours("")
    long_text = "<mask> " + "word " * 600
    with pytest.raises(ValueError, match="input 0 is .* tokens, more than the model's 128"):
        ours(long_text)
    assert ours(long_text, truncation=True)[0]["token"] >= 0
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        ours("a <mask>", top_k=0)
    with pytest.raises(ValueError, match="unknown option"):
        ours("a <mask>", topk=3)
    with pytest.raises(TypeError, match="input 0: the text must be a str"):
        ours([None])
    with pytest.raises(ValueError, match="unknown task 'fill_mask'; the tasks are: .*fill-mask"):
        xlmr_jax.pipeline("fill_mask", TINY_CHECKPOINT)


def test_on_a_mesh_and_in_bf16(ours):
    """A mesh splits each batch over its 8 devices (the same numbers within fp32 tolerance); bf16
    compute runs on request, its scores near the fp32 ones."""
    from xlmr_jax.sharding import make_mesh

    sharded = xlmr_jax.pipeline("fill-mask", TINY_CHECKPOINT, mesh=make_mesh("data=8"), batch_size=8)
    for a, b in zip(sharded(TEXTS, top_k=3), ours(TEXTS, top_k=3), strict=True):
        a, b = (a if isinstance(a[0], dict) else a[0]), (b if isinstance(b[0], dict) else b[0])
        np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)
    import jax.numpy as jnp

    half = xlmr_jax.pipeline("fill-mask", TINY_CHECKPOINT, dtype=jnp.bfloat16)
    assert half.model.dtype == jnp.bfloat16
    for a, b in zip(half(TEXTS, top_k=1), ours(TEXTS, top_k=1), strict=True):
        a, b = first_prediction(a), first_prediction(b)
        assert abs(a["score"] - b["score"]) < 0.02
