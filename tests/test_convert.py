"""Conversion HF PyTorch <-> Flax: bit-exact round trips for every head and both layouts, files
that transformers loads without complaint, head handling said out loud, and writes that are
all-or-nothing."""

import json
import logging
import os
import subprocess
import sys

import flax
import numpy as np
import pytest
import torch
import transformers
from reference_models import HF_CLASSES, build_reference, padded_batch, save_reference
from safetensors import safe_open
from safetensors.numpy import load_file

import xlmr_jax
from xlmr_jax.cli import main as cli_main
from xlmr_jax.convert import convert_checkpoint
from xlmr_jax.weights.export import DestinationExistsError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = list(HF_CLASSES["xlm-roberta"])
IDS, MASK = padded_batch(np.random.default_rng(0), [7, 4])


def overrides_for(arch):
    return {"XLMRobertaForQuestionAnswering": {"num_labels": 2},
            "XLMRobertaForCausalLM": {"is_decoder": True}}.get(arch, {})


def all_tensors(directory) -> dict[str, np.ndarray]:
    out = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            out.update(load_file(os.path.join(directory, name)))
    return out


def assert_bit_identical(a: dict, b: dict):
    assert sorted(a) == sorted(b), f"keys differ: {sorted(set(a) ^ set(b))}"
    for key, value in a.items():
        assert value.dtype == b[key].dtype and value.shape == b[key].shape, key
        assert np.array_equal(value.view(np.uint8), b[key].view(np.uint8)), f"{key} differs"


def load_reference(layout, arch, directory):
    model, info = HF_CLASSES[layout][arch].from_pretrained(directory, output_loading_info=True,
                                                           attn_implementation="eager")
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    return model.eval()


@pytest.mark.parametrize("layout", ["xlm-roberta", "xlm-roberta-xl"])
@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_is_bit_identical_and_loads_in_transformers(reference_checkpoint, tmp_path, layout, arch):
    _, path = reference_checkpoint(layout, arch, **overrides_for(arch))
    convert_checkpoint(path, tmp_path / "flax", to="flax")
    convert_checkpoint(tmp_path / "flax", tmp_path / "pytorch", to="pytorch")
    assert_bit_identical(all_tensors(path), all_tensors(tmp_path / "pytorch"))
    # What transformers holds after loading each directory is bit-identical too: stored bytes, exact.
    original, back = load_reference(layout, arch, path), load_reference(layout, arch, tmp_path / "pytorch")
    original_state, back_state = original.state_dict(), back.state_dict()
    assert sorted(original_state) == sorted(back_state)
    for key, value in original_state.items():
        assert torch.equal(value, back_state[key]), key
    # Outputs: the same weights in tensors at other addresses may round differently in MKL/oneDNN
    # (seen on AMD EPYC: 3e-8 between an in-memory model and the same weights loaded from files), so
    # outputs get a tolerance at float32 rounding level, never equality.
    inputs = {"input_ids": IDS, "attention_mask": MASK}
    if arch == "XLMRobertaForMultipleChoice":
        inputs = {k: v[None] for k, v in inputs.items()}
    with torch.no_grad():
        a = original(**{k: torch.tensor(v) for k, v in inputs.items()})
        b = back(**{k: torch.tensor(v) for k, v in inputs.items()})
    torch.testing.assert_close(b[0], a[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", ["xlm-roberta", "xlm-roberta-xl"])
@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_round_trip(tmp_path, layout, arch):
    ref = build_reference(layout, arch, **overrides_for(arch)).to(torch.bfloat16)
    path = save_reference(ref, tmp_path / "bf16")
    convert_checkpoint(path, tmp_path / "flax", to="flax")
    flax_file = load_file(tmp_path / "flax" / "flax_model.safetensors")
    assert {str(v.dtype) for v in flax_file.values()} == {"bfloat16"}
    convert_checkpoint(tmp_path / "flax", tmp_path / "pytorch", to="pytorch")
    assert_bit_identical(all_tensors(path), all_tensors(tmp_path / "pytorch"))
    assert load_reference(layout, arch, tmp_path / "pytorch").dtype == torch.bfloat16


def test_flax_format_is_plain_safetensors_and_loads(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta-xl", "XLMRobertaForMaskedLM")
    convert_checkpoint(path, tmp_path / "flax", to="flax")
    weights = tmp_path / "flax" / "flax_model.safetensors"
    with safe_open(weights, framework="numpy") as fh:
        meta = fh.metadata()
    assert meta["format"] == "flax" and meta["xlmr_jax_format_version"] == "1"
    assert meta["model_class"] == "XLMRobertaForMaskedLM"
    tree = flax.traverse_util.unflatten_dict(load_file(weights), sep=".")
    assert tree["roberta"]["encoder"]["layer"]["attention"]["self"]["query"]["kernel"].shape == (3, 32, 32)
    config = json.loads((tmp_path / "flax" / "config.json").read_text())
    assert config["architectures"] == ["XLMRobertaXLForMaskedLM"] and config["model_type"] == "xlm-roberta-xl"
    from_flax = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(tmp_path / "flax")(IDS, MASK).logits
    from_hf = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path)(IDS, MASK).logits
    np.testing.assert_array_equal(np.asarray(from_flax), np.asarray(from_hf))


def test_sharded_source_and_sharded_outputs(tmp_path):
    ref = build_reference("xlm-roberta", "XLMRobertaForSequenceClassification")
    single = save_reference(ref, tmp_path / "single")
    ref.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="20KB")
    convert_checkpoint(single, tmp_path / "flax-single", to="flax")
    convert_checkpoint(tmp_path / "sharded", tmp_path / "flax-sharded", to="flax", max_shard_size="30KB")
    assert (tmp_path / "flax-sharded" / "flax_model.safetensors.index.json").exists()
    assert_bit_identical(all_tensors(tmp_path / "flax-single"), all_tensors(tmp_path / "flax-sharded"))
    convert_checkpoint(tmp_path / "flax-sharded", tmp_path / "pt-sharded", to="pytorch", max_shard_size="25KB")
    index = json.loads((tmp_path / "pt-sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert_bit_identical(all_tensors(single), all_tensors(tmp_path / "pt-sharded"))
    load_reference("xlm-roberta", "XLMRobertaForSequenceClassification", tmp_path / "pt-sharded")


def test_save_pretrained_both_formats(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForTokenClassification")
    model = xlmr_jax.XLMRobertaForTokenClassification.from_pretrained(path)
    summary = model.save_pretrained(tmp_path / "pt", format="pytorch")
    assert summary["tensors"] == len(all_tensors(path))
    assert_bit_identical(all_tensors(path), all_tensors(tmp_path / "pt"))
    model.save_pretrained(tmp_path / "flax", format="flax", dtype="bfloat16")
    reloaded = xlmr_jax.XLMRobertaForTokenClassification.from_pretrained(tmp_path / "flax")
    assert str(reloaded.classifier.kernel[...].dtype) == "float32"  # param_dtype decides storage in memory
    np.testing.assert_allclose(np.asarray(reloaded(IDS, MASK).logits), np.asarray(model(IDS, MASK).logits),
                               atol=0.1)
    with pytest.raises(ValueError, match="format='onnx'"):
        model.save_pretrained(tmp_path / "x", format="onnx")


def test_new_head_initialised_and_dropped_head_said(reference_checkpoint, tmp_path, caplog):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    with caplog.at_level(logging.WARNING, logger="xlmr_jax"):
        summary = convert_checkpoint(path, tmp_path / "cls", to="pytorch",
                                     architecture="XLMRobertaForSequenceClassification", num_labels=4, seed=1)
    assert "newly initialised" in caplog.text and "lm_head.dense.weight" in caplog.text
    assert "classifier.out_proj.kernel" in summary["initialised"] and "lm_head.bias" in summary["dropped"]
    model = load_reference("xlm-roberta", "XLMRobertaForSequenceClassification", tmp_path / "cls")
    assert model.config.num_labels == 4
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xlmr_jax"):
        convert_checkpoint(path, tmp_path / "base", to="flax", architecture="XLMRobertaModel")
    assert "not used" in caplog.text and "lm_head" in caplog.text


def test_destination_exists_refused_then_overwritten(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep me")
    with pytest.raises(DestinationExistsError, match="exists; pass --overwrite"):
        convert_checkpoint(path, dest, to="flax")
    assert (dest / "precious.txt").read_text() == "keep me"
    convert_checkpoint(path, dest, to="flax", overwrite=True)
    assert sorted(os.listdir(dest)) == ["config.json", "flax_model.safetensors"]
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no staging left behind


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "interrupted"])
def test_failed_write_leaves_nothing_behind(reference_checkpoint, tmp_path, monkeypatch, failure):
    from xlmr_jax.weights import export

    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaModel")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep me")
    real_write = export.write_safetensors
    calls = []

    def failing_write(file, tensors, metadata, on_tensor):
        calls.append(file)
        if len(calls) == 2:  # fail in the middle of the second shard
            with open(file, "wb") as fh:
                fh.write(b"partial")
            raise failure
        return real_write(file, tensors, metadata, on_tensor)

    monkeypatch.setattr(export, "write_safetensors", failing_write)
    with pytest.raises(type(failure)):
        convert_checkpoint(path, dest, to="pytorch", overwrite=True, max_shard_size="20KB")
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert sorted(os.listdir(dest)) == ["precious.txt"]
    calls.clear()
    with pytest.raises(type(failure)):
        convert_checkpoint(path, tmp_path / "fresh", to="pytorch", max_shard_size="20KB")
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_bad_sources_fail_with_the_file_named(tmp_path):
    ref = build_reference("xlm-roberta", "XLMRobertaModel")
    path = save_reference(ref, tmp_path / "src")
    weights = os.path.join(path, "model.safetensors")
    with open(weights, "r+b") as fh:
        fh.truncate(os.path.getsize(weights) - 100)
    assert cli_main(["convert", path, str(tmp_path / "out"), "--to", "flax", "--no-progress"]) == 2
    assert not (tmp_path / "out").exists()
    with pytest.raises(xlmr_jax.CheckpointError, match="model.safetensors: not a readable safetensors file"):
        convert_checkpoint(path, tmp_path / "out", to="flax")


def test_pickle_checkpoints_only_when_allowed(tmp_path):
    ref = build_reference("xlm-roberta", "XLMRobertaForMaskedLM")
    # transformers 5 no longer writes pickles; older releases wrote exactly this file
    ref.config.architectures = ["XLMRobertaForMaskedLM"]
    ref.config.save_pretrained(tmp_path / "bin")
    torch.save(ref.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(xlmr_jax.CheckpointError, match="allow_pickle=True"):
        convert_checkpoint(tmp_path / "bin", tmp_path / "flax", to="flax")
    convert_checkpoint(tmp_path / "bin", tmp_path / "flax", to="flax", allow_pickle=True)
    convert_checkpoint(tmp_path / "flax", tmp_path / "pt", to="pytorch")
    expected = {k: v.numpy() for k, v in ref.state_dict().items() if not k.startswith("lm_head.decoder")}
    assert_bit_identical(expected, all_tensors(tmp_path / "pt"))


def test_command_line_tools(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "convert", "convert_checkpoint.py"), path, str(tmp_path / "flax"),
         "--to", "flax", "--no-progress"], capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "tensors       26 in 1 file(s)" in result.stdout and "peak RSS" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "xlmr_jax.cli", "convert", str(tmp_path / "flax"), str(tmp_path / "flax"),
         "--to", "pytorch"], capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2 and "is the source" in result.stderr


def test_hub_id_from_local_cache_offline(reference_checkpoint, tmp_path):
    """A hub cache laid out as huggingface_hub does, read with HF_HUB_OFFLINE=1 (no network here)."""
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--test-org--tiny-xlmr"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in os.listdir(path):
        os.symlink(os.path.join(path, name), snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = (
        "import sys, numpy as np, xlmr_jax\n"
        "m = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained('test-org/tiny-xlmr')\n"
        "np.save(sys.argv[1], np.asarray(m(np.array([[0, 5, 2]])).logits))\n"
        "try:\n"
        "    xlmr_jax.XLMRobertaModel.from_pretrained('test-org/not-cached')\n"
        "except FileNotFoundError as err:\n"
        "    print('missing:', err)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    logits_file = tmp_path / "logits.npy"
    result = subprocess.run([sys.executable, "-c", script, str(logits_file)], capture_output=True, text=True,
                            env=env, check=False)
    assert result.returncode == 0, result.stderr
    missing = result.stdout.strip().splitlines()[-1]
    expected = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path)(np.array([[0, 5, 2]])).logits
    # Every logit, not a sum (errors could cancel); another process, so a tolerance.
    np.testing.assert_allclose(np.load(logits_file), np.asarray(expected), rtol=0, atol=1e-5)
    assert missing.startswith("missing: test-org/not-cached: not a local directory, and the hub could not")


def test_transformers_loads_exports_without_warnings(reference_checkpoint, tmp_path, caplog):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForCausalLM", is_decoder=True)
    model = xlmr_jax.XLMRobertaForCausalLM.from_pretrained(path)
    model.save_pretrained(tmp_path / "pt")
    transformers.logging.set_verbosity_warning()
    transformers.logging.enable_propagation()  # so that caplog sees what transformers logs
    try:
        with caplog.at_level(logging.WARNING):
            transformers.XLMRobertaForCausalLM.from_pretrained(tmp_path / "pt")
        ours_report = caplog.text.lower()
        caplog.clear()
        with caplog.at_level(logging.WARNING):  # a control: a head the export lacks IS reported
            transformers.XLMRobertaForSequenceClassification.from_pretrained(tmp_path / "pt")
        control_report = caplog.text.lower()
    finally:
        transformers.logging.disable_propagation()
    assert "missing" in control_report and "classifier" in control_report
    for word in ("missing", "unexpected", "newly initialized", "mismatch"):
        assert word not in ours_report, ours_report
