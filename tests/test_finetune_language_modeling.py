"""Masked- and causal-LM fine-tuning through `finetune`: packed rows, dynamic masks, the held-out
loss falls, and the export is the reference's class (a decoder for causal LM)."""

import os

import pytest
import transformers
from finetune_helpers import make_checkpoint, read_metrics

from xlmr_jax.demo.corpus import SENTENCES
from xlmr_jax.finetune import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    train, dev = root / "train.txt", root / "dev.txt"
    train.write_text("\n".join(SENTENCES * 4) + "\n", encoding="utf-8")
    dev.write_text("\n".join(SENTENCES[:12]) + "\n", encoding="utf-8")
    return root, str(train), str(dev)


@pytest.mark.parametrize(("task", "arch"), [("masked-lm", "XLMRobertaForMaskedLM"),
                                            ("causal-lm", "XLMRobertaForCausalLM")])
def test_language_model_fine_tuning_lowers_the_held_out_loss(corpus, task, arch):
    root, train, dev = corpus
    extra = {"is_decoder": True} if task == "causal-lm" else {}
    checkpoint = make_checkpoint(root / f"{task}-start", arch, seed=4, **extra)
    output = root / task
    summary = finetune(FinetuneConfig(
        task=task, model=checkpoint, train_file=train, validation_file=dev, output=str(output),
        max_length=64, batch_size=8, max_steps=40, learning_rate=1e-3, warmup_ratio=0.1, eval_every=20,
        mesh=None, log_every=10, progress=False, seed=1,
    ))
    evals = [record["eval"] for record in read_metrics(output) if "eval" in record]
    assert len(evals) == 2
    assert evals[-1]["loss"] < evals[0]["loss"]
    assert summary["metric"] == "loss" and summary["best"] == min(e["loss"] for e in evals)
    if task == "masked-lm":
        assert 0.0 <= evals[-1]["accuracy"] <= 1.0
    exported = getattr(transformers, arch).from_pretrained(summary["model"])
    assert exported.config.is_decoder == (task == "causal-lm")
    assert os.path.exists(os.path.join(summary["model"], "sentencepiece.bpe.model"))


def test_packed_rows_are_full(corpus):
    from xlmr_jax.finetune.tasks import make_task
    from xlmr_jax.tokenizer import XLMRobertaTokenizer

    root, train, _ = corpus
    checkpoint = make_checkpoint(root / "pack-start", "XLMRobertaForMaskedLM", seed=4)
    task = make_task("masked-lm", dict(max_length=64, pack=True))
    features = task.features(task.read(train), XLMRobertaTokenizer.from_pretrained(checkpoint), "train")
    lengths = features.lengths
    assert (lengths[:-1] == 64).all()  # every row but the last is full: no compute on padding
