"""Every model and the train step over an 8-device CPU mesh (forced in conftest), per strategy:
the numbers equal one device's, and params and outputs sit where the rules say."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from parity import assert_close
from reference_models import padded_batch

import xlmr_jax
from xlmr_jax.sharding import describe, make_mesh, shard_batch
from xlmr_jax.training import make_eval_step, make_train_step, model_from_state

# vocab 104 and widths 32/48 divide by every axis size used here; heads 4
SHARDABLE = {"vocab_size": 104}
STRATEGIES = {
    "dp": ("data=8", P(None, None, None), P(None, None)),
    "fsdp": ("data=2,fsdp=4", P(None, "fsdp", None), P(None, "fsdp")),
    "tp": ("data=2,tensor=4", P(None, None, "tensor"), P("tensor", None)),
    "fsdp_tp": ("data=2,fsdp=2,tensor=2", P(None, "fsdp", "tensor"), P("tensor", "fsdp")),
}
ARCHS = ["XLMRobertaModel", "XLMRobertaForMaskedLM", "XLMRobertaForCausalLM", "XLMRobertaForSequenceClassification",
         "XLMRobertaForMultipleChoice", "XLMRobertaForTokenClassification", "XLMRobertaForQuestionAnswering"]


def overrides_for(arch):
    extra = {"XLMRobertaForQuestionAnswering": {"num_labels": 2},
             "XLMRobertaForCausalLM": {"is_decoder": True}}.get(arch, {})
    return {**SHARDABLE, **extra}


def inputs_for(arch):
    ids, mask = padded_batch(np.random.default_rng(0), [9, 4, 7, 5, 8, 3, 6, 9], vocab=104)
    if arch == "XLMRobertaForMultipleChoice":
        return {"input_ids": ids.reshape(8, 1, -1), "attention_mask": mask.reshape(8, 1, -1)}, mask
    return {"input_ids": ids, "attention_mask": mask}, mask


def main_output(arch, out):
    if arch == "XLMRobertaModel":
        return out.last_hidden_state
    if arch == "XLMRobertaForQuestionAnswering":
        return out.start_logits
    return out.logits


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("arch", ARCHS)
def test_sharded_forward_equals_single_device(reference_checkpoint, arch, strategy):
    spec, query_spec, embedding_spec = STRATEGIES[strategy]
    _, path = reference_checkpoint("xlm-roberta", arch, **overrides_for(arch))
    cls = getattr(xlmr_jax, arch)
    inputs, mask = inputs_for(arch)
    expected = main_output(arch, xlmr_jax.jit_forward(cls.from_pretrained(path))(**inputs))

    mesh = make_mesh(spec)
    model = cls.from_pretrained(path, mesh=mesh, rules=strategy)
    backbone = model if arch == "XLMRobertaModel" else model.roberta
    assert backbone.encoder.layer.attention.self.query.kernel[...].sharding.spec == query_spec
    assert backbone.embeddings.word_embeddings.embedding[...].sharding.spec == embedding_spec
    got = main_output(arch, xlmr_jax.jit_forward(model, mesh=mesh)(**inputs))
    batch_axes = {"dp": ("data",), "fsdp": ("data", "fsdp"), "tp": ("data",), "fsdp_tp": ("data", "fsdp")}
    assert got.sharding.spec[0] == batch_axes[strategy] or got.sharding.spec[0] == batch_axes[strategy][0]
    where = None if arch in ("XLMRobertaForSequenceClassification", "XLMRobertaForMultipleChoice") else mask
    assert_close(f"{arch} {strategy}", got, expected, where)


@pytest.mark.parametrize("arch", ["XLMRobertaForMaskedLM", "XLMRobertaForSequenceClassification"])
def test_sharded_train_step_equals_single_device(reference_checkpoint, arch):
    _, path = reference_checkpoint("xlm-roberta", arch, **overrides_for(arch))
    cls = getattr(xlmr_jax, arch)
    inputs, mask = inputs_for(arch)
    labels = (np.where(mask == 1, inputs["input_ids"], -100) if arch == "XLMRobertaForMaskedLM"
              else np.arange(8) % 3)
    batch = {**inputs, "labels": labels}
    results = {}
    for name, mesh in (("single", None), ("fsdp_tp", make_mesh("data=2,fsdp=2,tensor=2"))):
        model = cls.from_pretrained(path, mesh=mesh, rules="fsdp_tp")
        state, step = make_train_step(model, optax.adamw(1e-3))
        if mesh is not None:  # the moments are created sharded like their params, not on one device
            mu = state.opt_state[0].mu["roberta"]["encoder"]["layer"]["intermediate"]["dense"]["kernel"][...]
            assert mu.sharding.spec == P(None, "fsdp", "tensor")
            assert state.step.sharding.spec == P() and state.step.sharding.mesh == mesh
        placed = batch if mesh is None else shard_batch(batch, mesh)
        losses = []
        for _ in range(3):
            state, loss = step(state, placed, jax.random.key(0))  # same dropout masks on both
            losses.append(float(loss))
        eval_loss, _ = make_eval_step(model)(state.params, placed)
        trained = model_from_state(model, state)
        results[name] = (losses, float(eval_loss), trained)
        if mesh is not None:
            kernel = trained.roberta.encoder.layer.intermediate.dense.kernel[...]
            assert kernel.sharding.spec == P(None, "fsdp", "tensor")
            mu = state.opt_state[0].mu["roberta"]["encoder"]["layer"]["intermediate"]["dense"]["kernel"][...]
            assert mu.sharding.spec == P(None, "fsdp", "tensor")
    (l1, e1, m1), (l2, e2, m2) = results["single"], results["fsdp_tp"]
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    np.testing.assert_allclose(e1, e2, rtol=1e-5)
    a = np.asarray(m1.roberta.encoder.layer.output.dense.kernel[...])
    b = np.asarray(m2.roberta.encoder.layer.output.dense.kernel[...])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_xl_layout_loads_sharded_with_fsdp_tp(reference_checkpoint):
    import torch

    ref, path = reference_checkpoint("xlm-roberta-xl", "XLMRobertaForMaskedLM", **SHARDABLE)
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, mesh=mesh, rules="fsdp_tp")
    assert model.roberta.encoder.layer.attention.self_attn_layer_norm.scale[...].sharding.spec == P(None, None)
    assert model.roberta.encoder.LayerNorm.scale[...].sharding.spec == P(None)
    inputs, mask = inputs_for("XLMRobertaForMaskedLM")
    with torch.no_grad():
        expected = ref(**{k: torch.tensor(v) for k, v in inputs.items()}).logits
    assert_close("XL fsdp_tp logits", xlmr_jax.jit_forward(model, mesh=mesh)(**inputs).logits, expected, mask)
    assert "roberta.encoder.layer.attention.self.query.kernel" in describe(model)


def test_mesh_specs():
    assert dict(make_mesh("auto").shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert dict(make_mesh("fsdp=4,tensor=2").shape) == {"data": 1, "fsdp": 4, "tensor": 2}
    assert dict(make_mesh({"data": 2, "fsdp": 4}).shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    with pytest.raises(ValueError, match=r"needs 6 devices, but 8 are present"):
        make_mesh("data=3,tensor=2")
    with pytest.raises(ValueError, match="unknown axis"):
        make_mesh("model=8")
    with pytest.raises(ValueError, match="expected entries like 'data=2'"):
        make_mesh("data:8")


def test_axis_that_does_not_divide_names_param_and_dimension(reference_checkpoint):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")  # vocab 99
    with pytest.raises(ValueError, match=r"parameter lm_head.bias: dimension 0 \(vocab, size 99\) is not "
                                         r"divisible by mesh axis 'tensor' of size 2"):
        xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, mesh=make_mesh("data=4,tensor=2"), rules="tp")
    with pytest.raises(ValueError, match="rules='zero3'"):
        xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, mesh=make_mesh("auto"), rules="zero3")
    with pytest.raises(ValueError, match="batch size 6 is not divisible"):
        shard_batch(np.zeros((6, 4), np.int32), make_mesh("data=8"))


def test_memory_per_device_matches_the_arrays_placed(reference_checkpoint):
    from xlmr_jax.sharding import param_bytes_per_device

    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM", **SHARDABLE)
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, mesh=mesh, rules="fsdp_tp")
    device = jax.devices()[0]
    held = sum(
        shard.data.nbytes
        for leaf in jax.tree.leaves(nnx.state(model))
        for shard in leaf.addressable_shards if shard.device == device
    )
    computed = param_bytes_per_device(xlmr_jax.XLMRobertaForMaskedLM, model.config, mesh.shape, "fsdp_tp")
    assert held == computed
    assert computed < param_bytes_per_device(xlmr_jax.XLMRobertaForMaskedLM, model.config, {"data": 8}, "dp") / 3


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_quantised_memory_per_device_matches_the_arrays_placed(reference_checkpoint, quantization):
    from xlmr_jax.sharding import param_bytes_per_device

    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM", **SHARDABLE)
    mesh = make_mesh("data=2,fsdp=4")
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, mesh=mesh, rules="fsdp", quantization=quantization)
    device = jax.devices()[0]
    held = sum(
        shard.data.nbytes
        for leaf in jax.tree.leaves(nnx.state(model))
        for shard in leaf.addressable_shards if shard.device == device
    )
    computed = param_bytes_per_device(xlmr_jax.XLMRobertaForMaskedLM, model.config, mesh.shape, "fsdp",
                                      quantization=quantization)
    assert held == computed
    assert computed < param_bytes_per_device(xlmr_jax.XLMRobertaForMaskedLM, model.config, mesh.shape, "fsdp")


def test_a_new_head_is_created_in_its_sharding(reference_checkpoint):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel", **SHARDABLE)
    mesh = make_mesh("data=2,fsdp=2,tensor=2")
    model = xlmr_jax.XLMRobertaForSequenceClassification.from_pretrained(path, mesh=mesh, rules="fsdp_tp")
    kernel = model.classifier.dense.kernel[...]
    assert kernel.sharding.spec == P("fsdp", None) and kernel.sharding.mesh.shape == mesh.shape
    assert float(np.abs(np.asarray(kernel)).max()) > 0  # initialised, not zeros


def test_main_activations_are_pinned_to_the_batch_axes(reference_checkpoint):
    """Inside sharded functions the hidden states between layers carry a sharding constraint on
    the batch axis; without a mesh nothing is added."""
    from xlmr_jax.sharding import activation_mesh

    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM", **SHARDABLE)
    mesh = make_mesh("data=2,fsdp=4")
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, mesh=mesh, rules="fsdp")
    graphdef, state = nnx.split(model)
    inputs, _ = inputs_for("XLMRobertaForMaskedLM")
    ids, mask = shard_batch((inputs["input_ids"], inputs["attention_mask"]), mesh)

    traces = []

    @jax.jit
    def forward(state, ids, mask):  # one function for both: JAX's mesh context is part of its cache key
        traces.append(1)
        return nnx.merge(graphdef, state)(ids, mask).logits

    def lowered_text(with_mesh):
        with activation_mesh(mesh if with_mesh else None):
            return forward.lower(state, ids, mask).as_text()

    with activation_mesh(mesh):
        forward(state, ids, mask)
    forward(state, ids, mask)  # called without the mesh after a call with it: traced again, not reused
    assert len(traces) == 2
    pinned = lowered_text(True)
    assert pinned.count("sharding_constraint") >= 2 and '[{"data", "fsdp"}, {}, {}]' in pinned
    assert lowered_text(False).count("sharding_constraint") == 0
