"""LoRA adapters: unchanged at start, merge equals adapters, only adapters trained, QLoRA, saving."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from reference_models import padded_batch

import xlmr_jax
from xlmr_jax.quantization import add_lora, load_lora, lora_filter, merge_lora, save_lora
from xlmr_jax.quantization.lora import LoRALinear

SIZE = dict(hidden_size=64, intermediate_size=128)


@pytest.fixture(scope="module")
def checkpoint(reference_checkpoint):
    return reference_checkpoint("xlm-roberta", "XLMRobertaForSequenceClassification", num_labels=2, **SIZE)[1]


def _randomise_adapters(model, seed=1):
    for i, (_, var) in enumerate(nnx.to_flat_state(nnx.state(model, lora_filter))):
        value = var[...]
        var.set_value(0.05 * jax.random.normal(jax.random.key(seed + i), value.shape, value.dtype))


def _logits(model, ids, mask):
    return np.asarray(model(ids, mask).logits)


def test_adapters_start_as_the_identity_and_merge_exactly(checkpoint):
    base = xlmr_jax.XLMRobertaForSequenceClassification.from_pretrained(checkpoint)
    ids, mask = padded_batch(np.random.default_rng(0), [7, 5])
    model = add_lora(base, rank=4, alpha=8)
    np.testing.assert_allclose(_logits(model, ids, mask), _logits(base, ids, mask), atol=1e-6)
    layers = [p for p, m in nnx.iter_modules(model) if isinstance(m, LoRALinear)]
    assert len(layers) == 6  # query, key, value, attention output, intermediate, output (stacked)
    state = nnx.state(model, lora_filter)
    shapes = sorted(tuple(v[...].shape) for _, v in nnx.to_flat_state(state))
    assert shapes == sorted([(3, 64, 4)] * 5 + [(3, 128, 4)] + [(3, 4, 64)] * 5 + [(3, 4, 128)])
    _randomise_adapters(model)
    with_adapters = _logits(model, ids, mask)
    assert np.abs(with_adapters - _logits(base, ids, mask)).max() > 1e-3
    merged = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for _, m in nnx.iter_modules(merged))
    np.testing.assert_allclose(_logits(merged, ids, mask), with_adapters, atol=1e-5)


def test_only_adapters_are_trained(checkpoint):
    """Optimizer state holds adapter-sized arrays only; the frozen weights do not move; a trivially
    separable task is learnt by the adapters alone."""
    base = xlmr_jax.XLMRobertaForSequenceClassification.from_pretrained(checkpoint)
    model = add_lora(base, rank=4, alpha=8, targets=("query", "value", "intermediate"))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=lora_filter)
    adapter_shapes = {tuple(v[...].shape) for _, v in nnx.to_flat_state(nnx.state(model, lora_filter))}
    for leaf in jax.tree.leaves(nnx.state(optimizer, nnx.OptState)):
        assert leaf.ndim == 0 or tuple(leaf.shape) in adapter_shapes, leaf.shape
    frozen_before = {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Not(lora_filter)))}
    rng = np.random.default_rng(0)
    ids, mask = padded_batch(rng, [8] * 16)
    labels = (rng.random(16) < 0.5).astype(np.int32)
    ids[:, 1] = np.where(labels == 1, 5, 6)  # the class is the first token

    @nnx.jit
    def step(model, optimizer, ids, mask, labels):
        def loss_fn(model):
            return model(ids, mask, labels=labels).loss

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, lora_filter))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, ids, mask, labels)) for _ in range(40)]
    assert losses[-1] < 0.2 * losses[0], losses[::8]
    accuracy = (np.asarray(model(ids, mask).logits).argmax(-1) == labels).mean()
    assert accuracy == 1.0
    for k, v in nnx.to_flat_state(nnx.state(model, nnx.Not(lora_filter))):
        np.testing.assert_array_equal(np.asarray(v[...]), frozen_before[k])


def test_qlora_on_nf4_and_adapters_alone_saved(checkpoint, tmp_path):
    base = xlmr_jax.XLMRobertaForSequenceClassification.from_pretrained(checkpoint, quantization="nf4")
    model = add_lora(base, rank=2, alpha=4, targets=("query", "output"))
    _randomise_adapters(model)
    ids, mask = padded_batch(np.random.default_rng(0), [7, 5])
    grads = nnx.grad(lambda m: m(ids, mask, labels=np.array([0, 1])).loss,
                     argnums=nnx.DiffState(0, lora_filter))(model)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="holds LoRA adapters"):
        model.save_pretrained(tmp_path / "hf")
    summary = save_lora(model, tmp_path / "adapters")
    assert summary["targets"] == ["query", "output"] and summary["rank"] == 2
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["adapter_config.json",
                                                                         "adapter_model.safetensors"]
    reloaded = load_lora(base, tmp_path / "adapters")
    np.testing.assert_allclose(_logits(reloaded, ids, mask), _logits(model, ids, mask), atol=1e-6)
    merged = merge_lora(model)  # quantised base dequantised + adapters: a float model, saveable
    np.testing.assert_allclose(_logits(merged, ids, mask), _logits(model, ids, mask), atol=1e-5)
    merged.save_pretrained(tmp_path / "merged")
    again = xlmr_jax.XLMRobertaForSequenceClassification.from_pretrained(tmp_path / "merged")
    np.testing.assert_allclose(_logits(again, ids, mask), _logits(model, ids, mask), atol=1e-5)


def test_bad_input(checkpoint):
    model = xlmr_jax.XLMRobertaForSequenceClassification.from_pretrained(checkpoint)
    with pytest.raises(ValueError, match="expected names among query, key, value"):
        add_lora(model, 4, 8, targets=("qkv",))
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        add_lora(model, 0, 8)
    with pytest.raises(ValueError, match="match no module"):
        add_lora(model.classifier, 4, 8, targets=("query",))
    with pytest.raises(ValueError, match="LoRA adapters already"):
        add_lora(add_lora(model, 4, 8), 4, 8)
    with pytest.raises(ValueError, match="no LoRA adapters to merge"):
        merge_lora(model)
    adapters = nnx.to_flat_state(nnx.state(add_lora(model, 2, 2), lora_filter))
    assert all(jnp.issubdtype(v[...].dtype, jnp.floating) for _, v in adapters)
