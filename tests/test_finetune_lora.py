"""`finetune` with LoRA adapters (and QLoRA on an nf4 base): only the adapters and the task head
are in the training state and the optimizer's moments, the frozen weights do not move, the
adapters reach the full fine-tuning bar on the synthetic classification task, and the export is
the merged model (loads in transformers) with the adapters alone beside it."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
import transformers
from finetune_helpers import make_checkpoint, read_metrics, sentiment_records, write_jsonl
from safetensors.numpy import load_file

from xlmr_jax.demo import DEMO_CHECKPOINT
from xlmr_jax.finetune import FinetuneConfig, finetune
from xlmr_jax.finetune.setup import prepare_run


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    return FinetuneConfig(
        task="text-classification", model=DEMO_CHECKPOINT, output=str(root / "out"),
        train_file=write_jsonl(root / "train.jsonl", sentiment_records(256, 0)),
        validation_file=write_jsonl(root / "dev.jsonl", sentiment_records(64, 1)),
        max_length=64, buckets=(32, 64), batch_size=16, max_steps=48, learning_rate=3e-3, warmup_ratio=0.1,
        dropout=0.0, mesh=None, progress=False, log_every=80, seed=0, lora_rank=8, lora_alpha=16.0,
    )


def test_only_adapters_and_the_head_are_trained(config, tmp_path):
    run = prepare_run(dataclasses.replace(config, output=str(tmp_path / "unused")))
    names = {"/".join(str(k) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(run.initial_state.params)}
    assert names and all("lora" in n or "classifier" in n for n in names), sorted(names)[:5]
    hidden = run.model.config.hidden_size
    for leaf in jax.tree.leaves(run.initial_state.opt_state):
        # adapter-sized moments only: no (hidden x hidden) or larger array in the optimizer state
        assert leaf.size <= run.model.config.num_hidden_layers * max(8 * hidden * 4, hidden * hidden), leaf.shape


@pytest.mark.parametrize("quantization", [None, "nf4"])
def test_adapters_learn_and_export_merged(config, tmp_path, quantization):
    summary = finetune(dataclasses.replace(config, output=str(tmp_path / "run"), quantization=quantization))
    assert summary["final_eval"]["accuracy"] >= 0.95, summary["final_eval"]
    merged = transformers.XLMRobertaForSequenceClassification.from_pretrained(summary["model"])
    assert merged.config.id2label == {0: "neg", 1: "pos"}
    with open(os.path.join(summary["model"], "adapter", "adapter_config.json"), encoding="utf-8") as fh:
        assert json.load(fh)["rank"] == 8


def _adapter_run(config, output: str, mesh) -> tuple[list[float], dict[str, np.ndarray]]:
    summary = finetune(dataclasses.replace(config, output=output, mesh=mesh))
    losses = [record["loss"] for record in read_metrics(output) if "loss" in record]
    adapter_dir = os.path.join(summary["model"], "adapter")
    weights = {}
    for name in sorted(os.listdir(adapter_dir)):
        if name.endswith(".safetensors"):
            weights.update(load_file(os.path.join(adapter_dir, name)))
    return losses, weights


def test_adapters_on_a_mesh_train_as_on_one_device(config, tmp_path):
    """LoRA on a data=2 x fsdp=4 mesh (the batch split in two, the frozen base, the adapters and the
    head sharded four ways) logs the losses and exports the adapters of the one-device run."""
    model = make_checkpoint(tmp_path / "random", "XLMRobertaForSequenceClassification", seed=3, num_labels=2,
                            id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    short = dataclasses.replace(config, model=model, max_steps=4, log_every=1, eval_every=None, learning_rate=1e-3)
    losses_one, adapters_one = _adapter_run(short, str(tmp_path / "one"), None)
    losses_mesh, adapters_mesh = _adapter_run(short, str(tmp_path / "mesh"), "data=2,fsdp=4")
    assert len(losses_one) == 4
    np.testing.assert_allclose(losses_mesh, losses_one, rtol=1e-5)
    assert adapters_one.keys() == adapters_mesh.keys() and adapters_one
    for name, value in adapters_one.items():
        # the same sums in another order; Adam's per-element scaling makes rounding lr-sized only where
        # a gradient is ~0, which LoRA's zero-initialised B rules out after the first step
        np.testing.assert_allclose(adapters_mesh[name], value, atol=2e-5, err_msg=name)
