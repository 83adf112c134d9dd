"""The fine-tuning optimizer: AdamW with the reference Trainer's semantics, from optax blocks.

`make_optimizer` chains, in the reference's order: clip the gradients' global norm
(`clip_grad_norm_`), AdamW with decoupled weight decay masked off biases and LayerNorm scales
(`torch.optim.AdamW` with two parameter groups), a learning-rate schedule with linear warmup from 0
(`get_linear_schedule_with_warmup` / `get_cosine_schedule_with_warmup` /
`get_constant_schedule_with_warmup`), optionally layer-wise learning-rate decay, and optionally
gradient accumulation (`optax.MultiSteps`: micro-batch gradients are averaged, as the reference
divides each micro-batch's loss by the accumulation steps).

Which leaves decay and which layer a leaf belongs to are decided by the leaf's path alone (one
rule each, below), so the same optimizer serves every model class, sharded or not.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

SCHEDULES = ("linear", "cosine", "constant")

# Leaf names that never decay: every bias, and the LayerNorms' `scale` (the reference's
# `LayerNorm.weight`; `scale` is used by LayerNorms only).
NO_DECAY_NAMES = frozenset({"bias", "scale"})


# -- paths ---------------------------------------------------------------------------------------

def leaf_names(path) -> tuple[str, ...]:
    """A pytree path as names, e.g. ('roberta', 'encoder', 'layer', 'output', 'dense', 'kernel');
    the `value` attribute of an NNX Variable is not part of the name."""
    names = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            names.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            names.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            if key.name != "value":
                names.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            names.append(str(key.key))
        else:
            names.append(str(key))
    return tuple(names)


def is_decayed(names: tuple[str, ...]) -> bool:
    """THE weight-decay rule (the reference Trainer's: no decay on biases and LayerNorm weights)."""
    return names[-1] not in NO_DECAY_NAMES


def decay_mask(params):
    """A tree like `params` of bools: True where weight decay applies."""
    return jax.tree_util.tree_map_with_path(lambda path, _: is_decayed(leaf_names(path)), params)


def _is_stacked_layer(names: tuple[str, ...]) -> bool:
    """Encoder layer leaves: stacked on a leading `layers` axis (`...encoder.layer...`)."""
    return any(a == "encoder" and b == "layer" for a, b in itertools.pairwise(names))


def _is_embedding(names: tuple[str, ...]) -> bool:
    return "embeddings" in names


def num_stacked_layers(params) -> int:
    """The encoder's depth, read from the leading axis of its stacked leaves."""
    depths = {leaf.shape[0] for path, leaf in jax.tree_util.tree_leaves_with_path(params)
              if _is_stacked_layer(leaf_names(path))}
    if len(depths) != 1:
        raise ValueError(f"layerwise_lr_decay needs the encoder's stacked layers (`encoder.layer.*` leaves "
                         f"with one leading `layers` axis); found depths {sorted(depths)}")
    return depths.pop()


def layerwise_factor(names: tuple[str, ...], shape, num_layers: int, decay: float):
    """The LLRD factor of one leaf: 1 for the head (and anything above the last layer), decay**(L - i)
    for layer i (an array (L, 1, ...) over the stacked axis), decay**(L + 1) for the embeddings."""
    if _is_stacked_layer(names):
        factors = np.asarray([decay ** (num_layers - i) for i in range(num_layers)], np.float32)
        return factors.reshape((num_layers,) + (1,) * (len(shape) - 1))
    if _is_embedding(names):
        return np.float32(decay ** (num_layers + 1))
    return np.float32(1.0)


def scale_by_layerwise_decay(num_layers: int, decay: float) -> optax.GradientTransformation:
    """Multiply each update by its leaf's (per-layer-slice) LLRD factor; stateless."""

    def update_fn(updates, state, params=None):
        del params

        def scale(path, update):
            factor = layerwise_factor(leaf_names(path), update.shape, num_layers, decay)
            return update * jnp.asarray(factor, update.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


# -- schedules -----------------------------------------------------------------------------------

def resolve_warmup_steps(total_steps: int, warmup_steps: int = 0, warmup_ratio: float | None = None) -> int:
    """Warmup steps from a count or a ratio of `total_steps` (rounded up, as the reference does)."""
    if warmup_ratio is not None:
        if warmup_steps:
            raise ValueError("pass warmup_steps or warmup_ratio, not both")
        if not 0.0 <= warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1], got {warmup_ratio!r}")
        return math.ceil(total_steps * warmup_ratio)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)):
        raise TypeError(f"warmup_steps must be an integer, got {warmup_steps!r}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    return int(warmup_steps)


def make_schedule(learning_rate: float, total_steps: int, *, warmup_steps: int = 0,
                  warmup_ratio: float | None = None, schedule: str = "linear") -> optax.Schedule:
    """Learning rate per optimizer update (0-based): linear warmup from 0 over `warmup_steps`, then
    linear or cosine decay to 0 at `total_steps`, or constant. Values as the reference's
    `get_{linear,cosine,constant}_schedule_with_warmup`; after `total_steps` the rate stays at its end."""
    _check_positive_int("total_steps", total_steps)
    if not (isinstance(learning_rate, (int, float, np.floating)) and learning_rate >= 0):
        raise ValueError(f"learning_rate must be a number >= 0, got {learning_rate!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    warmup = resolve_warmup_steps(total_steps, warmup_steps, warmup_ratio)
    learning_rate = float(learning_rate)
    decay_steps = total_steps - warmup
    if schedule == "constant" or decay_steps == 0:
        after = optax.constant_schedule(learning_rate if schedule == "constant" else 0.0)
    elif schedule == "linear":
        after = optax.linear_schedule(learning_rate, 0.0, decay_steps)
    else:
        after = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=0.0)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup), after], [warmup])


# -- the optimizer -------------------------------------------------------------------------------

def make_optimizer(
    params,
    *,
    learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_ratio: float | None = None,
    schedule: str = "linear",
    weight_decay: float = 0.0,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    max_grad_norm: float | None = None,
    gradient_accumulation_steps: int = 1,
    layerwise_lr_decay: float | None = None,
) -> optax.GradientTransformation:
    """AdamW for fine-tuning `params` (an `nnx.State`, e.g. `nnx.state(model, nnx.Param)`, or any
    tree with the same paths), for `make_train_step(model, make_optimizer(...))`.

    `total_steps` and `warmup_steps` count optimizer updates (each one `gradient_accumulation_steps`
    calls of the train step). `layerwise_lr_decay=d` gives the head `learning_rate`, encoder layer i
    of L `learning_rate * d**(L - i)` and the embeddings `learning_rate * d**(L + 1)`.
    `learning_rate_of(opt_state)` reads the head's rate of the last update, for logging.
    """
    sched = make_schedule(learning_rate, total_steps, warmup_steps=warmup_steps,
                          warmup_ratio=warmup_ratio, schedule=schedule)
    for name, value in (("weight_decay", weight_decay),):
        if not (isinstance(value, (int, float, np.floating)) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not 0.0 <= adam_b1 < 1.0 or not 0.0 <= adam_b2 < 1.0:
        raise ValueError(f"adam_b1 and adam_b2 must be in [0, 1), got {adam_b1!r}, {adam_b2!r}")
    if not adam_eps >= 0:
        raise ValueError(f"adam_eps must be >= 0, got {adam_eps!r}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
    _check_positive_int("gradient_accumulation_steps", gradient_accumulation_steps)

    parts = []
    if max_grad_norm is not None:
        parts.append(optax.clip_by_global_norm(float(max_grad_norm)))
    # inject_hyperparams keeps the scheduled rate in the state, for learning_rate_of().
    parts.append(optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=sched, b1=adam_b1, b2=adam_b2, eps=adam_eps, weight_decay=float(weight_decay),
        mask=decay_mask,
    ))
    if layerwise_lr_decay is not None:
        if not 0.0 < layerwise_lr_decay <= 1.0:
            raise ValueError(f"layerwise_lr_decay must be in (0, 1], got {layerwise_lr_decay!r}")
        parts.append(scale_by_layerwise_decay(num_stacked_layers(params), float(layerwise_lr_decay)))
    optimizer = parts[0] if len(parts) == 1 else optax.chain(*parts)
    if gradient_accumulation_steps > 1:
        optimizer = optax.MultiSteps(optimizer, every_k_schedule=int(gradient_accumulation_steps))
        optimizer = optimizer.gradient_transformation()
    return optimizer


def learning_rate_of(opt_state) -> jax.Array:
    """The (head's) learning rate of the last update made with a `make_optimizer` state; before any
    update, that of the first one."""
    kinds = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, kinds)) if isinstance(s, kinds)]
    if len(found) != 1:
        raise ValueError("not the state of a make_optimizer optimizer (no scheduled learning rate in it)")
    return found[0].hyperparams["learning_rate"]


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


__all__: list[str] = [
    "decay_mask",
    "is_decayed",
    "layerwise_factor",
    "learning_rate_of",
    "make_optimizer",
    "make_schedule",
    "scale_by_layerwise_decay",
]
