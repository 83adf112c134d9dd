"""The reference's fine-tuning loop in PyTorch (the Trainer's AdamW: two parameter groups, linear
warmup/decay, clip_grad_norm_) and the comparison of trained parameters, for the optimizer and
fine-tuning parity tests."""

from __future__ import annotations

import numpy as np
import torch
import transformers


def hf_decayed(name: str) -> bool:
    """The reference Trainer's grouping: no decay on biases and LayerNorm weights."""
    return not (name.endswith("bias") or "LayerNorm.weight" in name)


def noise_only(params: dict) -> set:
    """The attention key biases: they get no gradient in exact arithmetic (softmax ignores a shift
    shared by every key), so Adam turns rounding noise into +-lr steps on both sides."""
    keys = {k for k in params if k.endswith("attention.self.key.bias")}
    assert keys, "no attention key bias among the parameters compared"
    return keys


def assert_params_close(got: dict, expected: dict, tol: float, lr_sum: float, also_noise: set = frozenset()) -> None:
    """Every parameter within `tol` (absolute, relative above 1); the noise-driven key biases (and
    `also_noise`) only within the summed learning rates (Adam moves a parameter by about lr per step)."""
    errors = {k: float(np.max(np.abs(v - expected[k]) / np.maximum(1.0, np.abs(expected[k]))))
              for k, v in got.items()}
    noise = noise_only(got) | set(also_noise)
    assert {k: e for k, e in errors.items() if k not in noise and e > tol} == {}
    assert max(errors[k] for k in noise) <= 2 * lr_sum


def train_reference(model: torch.nn.Module, batches: list[dict], *, lr: float, warmup: int, weight_decay: float,
                    max_grad_norm: float) -> list[float]:
    """Train `model` one step per batch as the reference Trainer does (no dropout: the model's
    config has none); returns the loss of every step."""
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if hf_decayed(n)], "weight_decay": weight_decay},
              {"params": [p for n, p in named if not hf_decayed(n)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, warmup, len(batches))
    model.train()
    losses = []
    for batch in batches:
        loss = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses
