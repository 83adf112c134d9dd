"""Tiny PyTorch reference models for parity tests: every parameter randomised, saved as an HF
checkpoint with `save_pretrained`, so our side goes through the public `from_pretrained`."""

from __future__ import annotations

import numpy as np
import torch
import transformers

# Reference classes by layout and head.
HF_CLASSES = {
    "xlm-roberta": {
        "XLMRobertaModel": transformers.XLMRobertaModel,
        "XLMRobertaForMaskedLM": transformers.XLMRobertaForMaskedLM,
        "XLMRobertaForCausalLM": transformers.XLMRobertaForCausalLM,
        "XLMRobertaForSequenceClassification": transformers.XLMRobertaForSequenceClassification,
        "XLMRobertaForMultipleChoice": transformers.XLMRobertaForMultipleChoice,
        "XLMRobertaForTokenClassification": transformers.XLMRobertaForTokenClassification,
        "XLMRobertaForQuestionAnswering": transformers.XLMRobertaForQuestionAnswering,
    },
    "xlm-roberta-xl": {
        "XLMRobertaModel": transformers.XLMRobertaXLModel,
        "XLMRobertaForMaskedLM": transformers.XLMRobertaXLForMaskedLM,
        "XLMRobertaForCausalLM": transformers.XLMRobertaXLForCausalLM,
        "XLMRobertaForSequenceClassification": transformers.XLMRobertaXLForSequenceClassification,
        "XLMRobertaForMultipleChoice": transformers.XLMRobertaXLForMultipleChoice,
        "XLMRobertaForTokenClassification": transformers.XLMRobertaXLForTokenClassification,
        "XLMRobertaForQuestionAnswering": transformers.XLMRobertaXLForQuestionAnswering,
    },
}

VOCAB = 99
PAD = 1


def tiny_config(layout: str, **overrides) -> transformers.PretrainedConfig:
    """A small config with the released checkpoints' conventions (eps 1e-5, pad 1, positions 2+)."""
    cls = transformers.XLMRobertaXLConfig if layout == "xlm-roberta-xl" else transformers.XLMRobertaConfig
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-5, pad_token_id=PAD,
        bos_token_id=0, eos_token_id=2, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        num_labels=3,
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random, LayerNorm weights and all biases too: the reference's 1/0 init
    would hide a swapped or dropped parameter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if param.ndim == 2 and "embeddings" not in name:
                # Linear weights scaled by fan-in so activations stay O(1) through the layers:
                # parity is then measured at a magnitude where fp32 resolves 1e-5.
                noise = noise / param.shape[1] ** 0.5
            else:
                noise = noise * 0.3
            if name.endswith("LayerNorm.weight") or "layer_norm.weight" in name:
                noise = 1.0 + noise
            param.copy_(noise)


def build_reference(layout: str, arch: str, seed: int = 0, **config_overrides) -> torch.nn.Module:
    config = tiny_config(layout, **config_overrides)
    config._attn_implementation = "eager"  # so that attention weights can be returned
    torch.manual_seed(seed)
    model = HF_CLASSES[layout][arch](config)
    randomise(model, seed)
    return model.eval()


def save_reference(model: torch.nn.Module, directory) -> str:
    model.save_pretrained(str(directory), safe_serialization=True)
    return str(directory)


def padded_batch(rng: np.random.Generator, lengths: list[int], vocab: int = VOCAB, pad: int = PAD):
    """Right-padded ids `<s> ... </s>` of uneven lengths and their attention mask."""
    width = max(lengths)
    ids = np.full((len(lengths), width), pad, dtype=np.int64)
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    for row, n in enumerate(lengths):
        body = rng.integers(3, vocab, size=n)
        body[0], body[-1] = 0, 2
        ids[row, :n] = body
        mask[row, :n] = 1
    return ids, mask
