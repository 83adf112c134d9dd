"""A real two-process run on this machine: `jax.distributed` over CPU (gloo), 4 devices each, a
checkpoint loaded sharded across both, forward and train steps equal to one process's, each
process reading only the slices its own devices hold, and the training state saved collectively."""

import json
import os
import subprocess
import sys

import numpy as np
import optax
import pytest
from processes import free_port, run_together
from reference_models import padded_batch

import xlmr_jax
from xlmr_jax.training import make_train_step, restore_train_state
from xlmr_jax.weights.safetensors_io import SafetensorsReader

HERE = os.path.dirname(os.path.abspath(__file__))


def test_two_processes_agree_with_one_and_read_only_their_slices(reference_checkpoint, tmp_path):
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM", vocab_size=104)
    ids, mask = padded_batch(np.random.default_rng(0), [9, 4, 7, 5, 8, 3, 6, 9], vocab=104)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": np.where(mask == 1, ids, -100)}
    np.savez(tmp_path / "batch.npz", **batch)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    run_together([[sys.executable, os.path.join(HERE, "multiprocess_worker.py"), path, str(port), str(i),
                   str(tmp_path)] for i in range(2)], env)

    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path)
    expected_logits = np.asarray(xlmr_jax.jit_forward(model)(ids, mask).logits)
    state, train_step = make_train_step(model, optax.sgd(0.1))
    expected_losses = []
    for _ in range(2):
        state, loss = train_step(state, batch)
        expected_losses.append(float(loss))
    expected_kernel = np.asarray(state.params["roberta"]["encoder"]["layer"]["intermediate"]["dense"]["kernel"][...])

    reader = SafetensorsReader(os.path.join(path, "model.safetensors"))
    total_bytes = sum(entry.nbytes for entry in reader.entries.values())
    reader.close()
    # the training state was saved collectively: one data file per process, one manifest; it
    # restores onto a single device
    saved = tmp_path / "train-state"
    assert len(list(saved.glob("ocdbt.process_*"))) == 2, sorted(p.name for p in saved.iterdir())
    fresh, _ = make_train_step(xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(path), optax.sgd(0.1))
    restored = restore_train_state(saved, fresh)
    assert int(restored.step) == 2
    restored_kernel = restored.params["roberta"]["encoder"]["layer"]["intermediate"]["dense"]["kernel"][...]
    np.testing.assert_allclose(np.asarray(restored_kernel), expected_kernel, atol=1e-5)

    # and exported as HF safetensors from both processes (process 0 writes, both gather)
    exported = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(tmp_path / "export")
    exported_kernel = np.asarray(exported.roberta.encoder.layer.intermediate.dense.kernel[...])
    np.testing.assert_allclose(exported_kernel, expected_kernel, atol=1e-5)

    for i in range(2):
        arrays = np.load(tmp_path / f"process{i}.npz")
        report = json.loads((tmp_path / f"process{i}.json").read_text())
        diff = np.abs(arrays["logits"] - expected_logits)[mask.astype(bool)].max()
        assert diff <= 1e-5, f"process {i}: logits differ by {diff}"
        np.testing.assert_allclose(report["losses"], expected_losses, rtol=1e-5)
        np.testing.assert_allclose(arrays["kernel"], expected_kernel, atol=1e-5)
        # FSDP over 8 devices, 4 per process: a process needs about half of every sharded tensor
        share = report["bytes_read"] / total_bytes
        assert share < 0.6, f"process {i} read {share:.0%} of the checkpoint; it needs only its own slices"
        assert share > 0.4, f"process {i} read {share:.0%} of the checkpoint: too little to hold its slices"


def test_unreachable_coordinator_fails_fast_with_a_clear_message():
    script = ("import xlmr_jax.distributed as d\n"
              f"try:\n    d.initialize('127.0.0.1:{free_port()}', 2, 1, timeout_s=3)\n"
              "except RuntimeError as err:\n    print(err)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "not reachable within 3 s" in result.stdout and "is process 0 running" in result.stdout


def test_incomplete_settings_are_named(monkeypatch):
    from xlmr_jax import distributed

    assert distributed.initialize() is False  # a single process: nothing to do
    with pytest.raises(ValueError, match="process_id not given"):
        distributed.initialize("127.0.0.1:1234", 2)
    with pytest.raises(ValueError, match=r"process_id=2 must be in \[0, 2\)"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    monkeypatch.setenv("XLMR_JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="XLMR_JAX_NUM_PROCESSES='two' must be an integer"):
        distributed.initialize()
