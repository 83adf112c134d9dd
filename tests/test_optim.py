"""The fine-tuning optimizer against the reference: the same 20 AdamW steps as a PyTorch loop over
`transformers` (two param groups, linear warmup/decay, clip_grad_norm_), gradient accumulation,
the cosine schedule, layer-wise learning-rate decay and the weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from grad_mapping import per_reference_key
from optim_reference import assert_params_close, hf_decayed, noise_only
from reference_models import build_reference, padded_batch, save_reference

import xlmr_jax
from xlmr_jax.training import learning_rate_of, make_optimizer, make_schedule, make_train_step
from xlmr_jax.training.optim import decay_mask, leaf_names

ARCH = "XLMRobertaForSequenceClassification"
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=None)
LAYERS = 3  # tiny_config's depth


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(torch model, checkpoint dir): sequence classification, every weight random, no dropout."""
    model = build_reference("xlm-roberta", ARCH, seed=11, **NO_DROPOUT)
    return model, save_reference(model, tmp_path_factory.mktemp("optim-ref"))


def batches(count: int, size: int = 8, seed: int = 0) -> list[dict]:
    """Fixed padded batches (all of one width) with a valid label on every row."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        lengths = [int(n) for n in rng.integers(4, 12, size=size)]
        lengths[0] = 12
        ids, mask = padded_batch(rng, lengths)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": rng.integers(0, 3, size=size)})
    return out


def ours(batch: dict) -> dict:
    return {key: value.astype(np.int32) for key, value in batch.items()}


def load(path):
    return xlmr_jax.XLMRobertaForSequenceClassification.from_pretrained(path)


def train(model, optimizer):
    return make_train_step(model, optimizer)


@pytest.fixture
def one_torch_thread():
    """PyTorch on one thread: several threads on a small CPU box turn this tiny model's steps
    from milliseconds into a second each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_twenty_steps_match_a_pytorch_adamw_loop(reference, one_torch_thread):
    torch_model, path = reference
    data = batches(4)
    steps, warmup, lr, wd = 20, 3, 1e-3, 0.01

    model = load(path)
    optimizer = make_optimizer(nnx.state(model, nnx.Param), learning_rate=lr, total_steps=steps,
                               warmup_steps=warmup, weight_decay=wd, max_grad_norm=1.0)
    state, train_step = train(model, optimizer)

    torch.manual_seed(0)
    named = list(torch_model.named_parameters())
    groups = [{"params": [p for n, p in named if hf_decayed(n)], "weight_decay": wd},
              {"params": [p for n, p in named if not hf_decayed(n)], "weight_decay": 0.0}]
    torch_opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    scheduler = transformers.get_linear_schedule_with_warmup(torch_opt, warmup, steps)
    torch_model.train()

    loss_diffs = []
    for step in range(steps):
        batch = data[step % len(data)]
        torch_lr = scheduler.get_last_lr()[0]
        loss = torch_model(**{k: torch.from_numpy(v) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(torch_model.parameters(), 1.0)
        torch_opt.step()
        scheduler.step()
        torch_opt.zero_grad()

        state, our_loss = train_step(state, ours(batch))
        loss_diffs.append(abs(float(our_loss) - loss.item()) / abs(loss.item()))
        np.testing.assert_allclose(float(learning_rate_of(state.opt_state)), torch_lr, rtol=1e-6, atol=1e-12)
    assert max(loss_diffs) <= 1e-4, loss_diffs

    reference_params = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    trained = per_reference_key(state.params, "roberta")
    assert set(trained) <= set(reference_params)
    assert len(trained) == len(named)
    lr_sum = sum(float(make_schedule(lr, steps, warmup_steps=warmup)(s)) for s in range(steps))
    assert_params_close(trained, reference_params, 1e-4, lr_sum)
    # and training moved every parameter with a gradient well beyond that tolerance
    initial = per_reference_key(nnx.state(load(path), nnx.Param), "roberta")
    moved = [k for k in trained if np.max(np.abs(trained[k] - initial[k])) > 1e-3]
    assert set(trained) - set(moved) <= noise_only(trained)


def test_gradient_accumulation_equals_one_large_batch(reference):
    _, path = reference
    data = batches(3)
    sched = dict(learning_rate=1e-3, total_steps=3, warmup_steps=1)
    kw = dict(sched, weight_decay=0.01, max_grad_norm=1.0)

    model = load(path)
    state, step = train(model, make_optimizer(nnx.state(model, nnx.Param), **kw))
    for batch in data:
        state, _ = step(state, ours(batch))

    model = load(path)
    accumulated, micro_step = train(
        model, make_optimizer(nnx.state(model, nnx.Param), gradient_accumulation_steps=2, **kw))
    for batch in data:
        for half in (slice(0, 4), slice(4, 8)):
            accumulated, _ = micro_step(accumulated, ours({k: v[half] for k, v in batch.items()}))

    assert int(accumulated.step) == 6
    assert float(learning_rate_of(accumulated.opt_state)) == float(learning_rate_of(state.opt_state))
    big, small = per_reference_key(state.params, "roberta"), per_reference_key(accumulated.params, "roberta")
    assert_params_close(small, big, 1e-5, lr_sum=sum(float(make_schedule(**sched)(s)) for s in range(3)))


@pytest.mark.parametrize("warmup", [0, 7])
def test_schedules_equal_the_reference(warmup):
    total, lr = 50, 3e-4
    for name, reference_factory in [("cosine", transformers.get_cosine_schedule_with_warmup),
                                    ("linear", transformers.get_linear_schedule_with_warmup)]:
        dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        reference_schedule = reference_factory(dummy, warmup, total)
        schedule = make_schedule(lr, total, warmup_steps=warmup, schedule=name)
        for step in range(total):
            expected = reference_schedule.get_last_lr()[0]
            got = float(schedule(jnp.asarray(step, jnp.int32)))
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=lr * 1e-7, err_msg=f"{name} step {step}")
            dummy.step()
            reference_schedule.step()
    constant = make_schedule(lr, total, warmup_steps=warmup, schedule="constant")
    assert float(constant(total - 1)) == pytest.approx(lr)
    assert make_schedule(lr, 10, warmup_ratio=0.25)(3) == pytest.approx(lr)  # ceil(2.5) = 3 warmup steps


def test_layerwise_decay_scales_each_layer_slice(reference):
    _, path = reference
    params = nnx.state(load(path), nnx.Param)
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.5, params)
    kw = dict(learning_rate=1.0, total_steps=1, schedule="constant")
    decay = 0.5

    def first_update(**extra):
        optimizer = make_optimizer(params, **kw, **extra)
        updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
        return {leaf_names(p): np.asarray(u) for p, u in jax.tree_util.tree_leaves_with_path(updates)}

    plain, scaled = first_update(), first_update(layerwise_lr_decay=decay)
    assert set(plain) == set(scaled)
    kinds = set()
    for names, update in plain.items():
        if names[:3] == ("roberta", "encoder", "layer"):
            kinds.add("layer")
            assert update.shape[0] == LAYERS
            expected = np.asarray([decay ** (LAYERS - i) for i in range(LAYERS)])
            ratio = (scaled[names] / update).reshape(LAYERS, -1)
            np.testing.assert_allclose(ratio, np.broadcast_to(expected[:, None], ratio.shape), rtol=1e-6)
        elif names[:2] == ("roberta", "embeddings"):
            kinds.add("embeddings")
            np.testing.assert_allclose(scaled[names] / update, decay ** (LAYERS + 1), rtol=1e-6)
        else:
            kinds.add(names[0])
            assert names[0] == "classifier"
            np.testing.assert_array_equal(scaled[names], update)
        np.testing.assert_allclose(np.abs(update), 1.0, rtol=1e-6)  # Adam's first step: lr * sign
    assert kinds == {"layer", "embeddings", "classifier"}


def test_weight_decay_mask_is_the_reference_grouping(reference):
    torch_model, path = reference
    params = nnx.state(load(path), nnx.Param)
    decayed = sorted(".".join(leaf_names(p)) for p, on in jax.tree_util.tree_leaves_with_path(decay_mask(params))
                     if on)
    layer = "roberta.encoder.layer."
    assert decayed == [
        "classifier.dense.kernel",
        "classifier.out_proj.kernel",
        "roberta.embeddings.position_embeddings.embedding",
        "roberta.embeddings.token_type_embeddings.embedding",
        "roberta.embeddings.word_embeddings.embedding",
        layer + "attention.output.dense.kernel",
        layer + "attention.self.key.kernel",
        layer + "attention.self.query.kernel",
        layer + "attention.self.value.kernel",
        layer + "intermediate.dense.kernel",
        layer + "output.dense.kernel",
    ]
    # Mapped to the reference's names, the same split as the Trainer's param groups.
    as_float = jax.tree.map(lambda on, p: jnp.full(p.shape, on, jnp.float32), decay_mask(params), params)
    by_key = per_reference_key(as_float, "roberta")
    names = [n for n, _ in torch_model.named_parameters()]
    assert set(by_key) == set(names)
    assert {k for k, v in by_key.items() if np.all(v == 1)} == {n for n in names if hf_decayed(n)}
    assert {k for k, v in by_key.items() if np.all(v == 0)} == {n for n in names if not hf_decayed(n)}


def test_bad_arguments_are_named():
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_optimizer(params, learning_rate=1e-3, total_steps=10, schedule="step")
    with pytest.raises(ValueError, match="warmup_steps must be in"):
        make_optimizer(params, learning_rate=1e-3, total_steps=10, warmup_steps=11)
    with pytest.raises(ValueError, match="not both"):
        make_optimizer(params, learning_rate=1e-3, total_steps=10, warmup_steps=2, warmup_ratio=0.1)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        make_optimizer(params, learning_rate=1e-3, total_steps=10, gradient_accumulation_steps=0)
    with pytest.raises(ValueError, match="stacked layers"):
        make_optimizer(params, learning_rate=1e-3, total_steps=10, layerwise_lr_decay=0.9)
