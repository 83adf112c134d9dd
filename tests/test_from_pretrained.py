"""`from_pretrained` on HF checkpoints: variants to accept, and errors that name file and key."""

import json
import logging
import os
import shutil

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from parity import assert_close
from reference_models import build_reference, padded_batch, save_reference
from safetensors.numpy import load_file, save_file

import xlmr_jax
from xlmr_jax import CheckpointError

IDS, MASK = padded_batch(np.random.default_rng(0), [7, 4])


def copy_checkpoint(src, dst, edit=None):
    """A copy of a checkpoint directory, with its tensors passed through `edit(dict) -> dict`."""
    shutil.copytree(src, dst)
    if edit is not None:
        path = os.path.join(dst, "model.safetensors")
        save_file(edit(load_file(path)), path, metadata={"format": "pt"})
    return str(dst)


def edit_config(directory, **changes):
    path = os.path.join(directory, "config.json")
    with open(path) as fh:
        config = json.load(fh)
    config.update(changes)
    with open(path, "w") as fh:
        json.dump(config, fh)


def hidden(model):
    out = model(IDS, MASK)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


def test_head_from_base_checkpoint_initialises_head_out_loud(reference_checkpoint, caplog):
    ref, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    with caplog.at_level(logging.WARNING, logger="xlmr_jax"):
        model = xlmr_jax.XLMRobertaForSequenceClassification.from_pretrained(path, seed=3)
    assert "newly initialised" in caplog.text and "classifier.out_proj.kernel" in caplog.text
    assert "pooler" in caplog.text  # the base checkpoint's pooler is unused by this head
    with torch.no_grad():
        expected = ref(torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state
    assert_close("backbone", model.roberta(IDS, MASK).last_hidden_state, expected, MASK)
    # fresh head initialised like the reference: normal(initializer_range), zero bias
    kernel = np.asarray(model.classifier.dense.kernel[...])
    assert 0.01 < kernel.std() < 0.03 and not np.asarray(model.classifier.dense.bias[...]).any()


def test_base_from_head_checkpoint_drops_head_out_loud(reference_checkpoint, caplog):
    ref, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    with caplog.at_level(logging.WARNING, logger="xlmr_jax"):
        model = xlmr_jax.XLMRobertaModel.from_pretrained(path)
    assert "not used" in caplog.text and "lm_head.dense.weight" in caplog.text
    assert "pooler.dense.kernel" in caplog.text  # MaskedLM checkpoints have no pooler
    with torch.no_grad():
        expected = ref.roberta(torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state
    assert_close("backbone", hidden(model), expected, MASK)


def test_nothing_said_when_everything_matches(reference_checkpoint, caplog):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    with caplog.at_level(logging.WARNING, logger="xlmr_jax"):
        xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path)
    assert caplog.text == ""


def test_sharded_checkpoint_equals_single_file(tmp_path):
    ref = build_reference("xlm-roberta", "XLMRobertaForMaskedLM")
    single = save_reference(ref, tmp_path / "single")
    ref.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="20KB")
    assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
    assert len([f for f in os.listdir(tmp_path / "sharded") if f.endswith(".safetensors")]) > 2
    a = hidden(xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(single))
    b = hidden(xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(tmp_path / "sharded"))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_legacy_names_missing_prefix_and_buffers(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    expected = hidden(xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path))

    def legacy(tensors):
        out = {}
        for key, value in tensors.items():
            key = key.removeprefix("roberta.")
            if "LayerNorm" in key:
                key = key.replace(".weight", ".gamma").replace(".bias", ".beta")
            out[key] = value
        out["embeddings.position_ids"] = np.arange(40)[None]
        out["lm_head.decoder.weight"] = tensors["roberta.embeddings.word_embeddings.weight"]
        out["lm_head.decoder.bias"] = tensors["lm_head.bias"]
        return out

    edited = copy_checkpoint(path, tmp_path / "legacy", legacy)
    np.testing.assert_array_equal(np.asarray(hidden(xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(edited))),
                                  np.asarray(expected))


def test_decoder_bias_alias_stands_in_for_missing_lm_head_bias(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    expected = hidden(xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path))

    def alias_only(tensors):
        tensors["lm_head.decoder.bias"] = tensors.pop("lm_head.bias")
        return tensors

    edited = copy_checkpoint(path, tmp_path / "alias", alias_only)
    np.testing.assert_array_equal(np.asarray(hidden(xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(edited))),
                                  np.asarray(expected))


def test_untied_decoder(tmp_path):
    ref = build_reference("xlm-roberta", "XLMRobertaForMaskedLM", tie_word_embeddings=False)
    assert ref.lm_head.decoder.weight.data_ptr() != ref.roberta.embeddings.word_embeddings.weight.data_ptr()
    path = save_reference(ref, tmp_path / "untied")
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path)
    with torch.no_grad():
        expected = ref(torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits
    assert_close("logits", model(IDS, MASK).logits, expected, MASK)


def test_bf16_checkpoint_loads_bit_exact(tmp_path):
    ref = build_reference("xlm-roberta", "XLMRobertaForMaskedLM").to(torch.bfloat16)
    path = save_reference(ref, tmp_path / "bf16")
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path, param_dtype=jnp.bfloat16)
    stored = load_file(os.path.join(path, "model.safetensors"))["roberta.encoder.layer.1.intermediate.dense.weight"]
    ours = np.asarray(model.roberta.encoder.layer.intermediate.dense.kernel[...][1]).T
    assert ours.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(ours.view(np.uint16), stored.view(np.uint16))


# -- errors --------------------------------------------------------------------------------

def test_missing_tensor_is_named(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")

    def drop(tensors):
        del tensors["roberta.encoder.layer.2.output.LayerNorm.weight"]
        del tensors["roberta.embeddings.word_embeddings.weight"]
        return tensors

    edited = copy_checkpoint(path, tmp_path / "missing", drop)
    with pytest.raises(CheckpointError) as err:
        xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(edited)
    message = str(err.value)
    assert "layers [2]" in message and "roberta.encoder.layer.2.output.LayerNorm.weight" in message
    assert "roberta.embeddings.word_embeddings.weight" in message  # both problems in one error


def test_unexpected_tensor_is_named(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    edited = copy_checkpoint(path, tmp_path / "extra",
                             lambda t: {**t, "encoder.layer.0.attention.self.rotary.weight": np.zeros(3)})
    with pytest.raises(CheckpointError, match="unexpected tensor 'encoder.layer.0.attention.self.rotary.weight'"):
        xlmr_jax.XLMRobertaModel.from_pretrained(edited)


def test_shape_mismatch_against_config(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    edited = copy_checkpoint(path, tmp_path / "shape")
    edit_config(edited, vocab_size=120)
    with pytest.raises(CheckpointError, match=r"embeddings.word_embeddings.weight.*shape \(99, 32\).*\(120, 32\)"):
        xlmr_jax.XLMRobertaModel.from_pretrained(edited)


def test_config_contradicting_weights(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta-xl", "XLMRobertaModel")
    edited = copy_checkpoint(path, tmp_path / "layout")
    edit_config(edited, model_type="xlm-roberta")
    with pytest.raises(CheckpointError, match="self_attn_layer_norm.*contradicts the weights"):
        xlmr_jax.XLMRobertaModel.from_pretrained(edited)
    edit_config(edited, model_type="xlm-roberta-xl", num_hidden_layers=2)
    with pytest.raises(CheckpointError, match="layer 2 but config num_hidden_layers=2"):
        xlmr_jax.XLMRobertaModel.from_pretrained(edited)


def test_missing_shard_and_corrupt_file(tmp_path):
    ref = build_reference("xlm-roberta", "XLMRobertaModel")
    ref.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="20KB")
    shards = sorted(f for f in os.listdir(tmp_path / "sharded") if f.endswith(".safetensors"))
    os.remove(tmp_path / "sharded" / shards[1])
    with pytest.raises(CheckpointError, match=f"lists shard.*{shards[1]}"):
        xlmr_jax.XLMRobertaModel.from_pretrained(tmp_path / "sharded")

    single = save_reference(ref, tmp_path / "single")
    weights = os.path.join(single, "model.safetensors")
    with open(weights, "r+b") as fh:
        fh.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        xlmr_jax.XLMRobertaModel.from_pretrained(single)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found"):
        xlmr_jax.XLMRobertaModel.from_pretrained(tmp_path / "nope")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no config.json"):
        xlmr_jax.XLMRobertaModel.from_pretrained(tmp_path / "empty")
    xlmr_jax.XLMRobertaConfig().to_json_file(tmp_path / "empty" / "config.json")
    with pytest.raises(CheckpointError, match="no weights in .*expected model.safetensors"):
        xlmr_jax.XLMRobertaModel.from_pretrained(tmp_path / "empty")
