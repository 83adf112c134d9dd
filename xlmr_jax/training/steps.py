"""One jitted train step and one eval step, for any of the seven models.

The model is split once into a static graph and its parameters; the steps are pure functions of
(parameters, optimizer state, batch), so they work unchanged on one device or on a mesh: sharded
parameters (from `from_pretrained(..., mesh=...)`) stay sharded, the optimizer state is created
with the same shardings, and the old parameters and optimizer state are donated to the update.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import NamedSharding, PartitionSpec

from xlmr_jax.sharding import activation_mesh, mesh_of


@struct.dataclass
class TrainState:
    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array


def _loss(graphdef, params, frozen, batch: Mapping, dropout_rng):
    model = nnx.merge(graphdef, params, *frozen)
    out = model(**batch, deterministic=dropout_rng is None, dropout_rng=dropout_rng)
    if out.loss is None:
        raise ValueError("the batch gives no loss: pass labels (or start_positions/end_positions for QA)")
    return out.loss.astype(jnp.float32)  # differentiated in float32 under any compute dtype


def make_train_step(model, optimizer: optax.GradientTransformation, *,
                    with_grad_norm: bool = False, trainable=None) -> tuple[TrainState, Callable]:
    """(initial state, step) for training `model` with `optimizer`.

    `state, loss = step(state, batch, dropout_rng)` (with `with_grad_norm=True`:
    `state, (loss, grad_norm)`, the global norm of the gradients before any clipping, so a caller
    can tell a non-finite gradient from a non-finite loss without a second pass); `batch` is a dict of the model's keyword
    arguments (input_ids, attention_mask, labels, ...); `dropout_rng=None` trains without dropout.
    The state passed in is donated: use the returned one. The initial state holds the model's own
    parameter arrays (no copy of the model is made), so the first step consumes them: after
    training, `model_from_state(model, state)` gives the trained model back; do not call `model`.

    `trainable` (an nnx filter, e.g. LoRA's adapters and the task head) trains only the matching
    leaves: the state (and the optimizer's moments) holds just those; the rest of the model is
    passed to the step unchanged and never donated.
    """
    graphdef, params, frozen = _split(model, trainable)
    mesh = mesh_of(params)
    if mesh is None:
        # Committed to the params' device like the state the step returns, so that the second step
        # does not compile again for a differently placed input.
        device = next(iter(jax.tree.leaves(params)[0].devices()))
        state = jax.device_put(TrainState(params=params, opt_state=jax.jit(optimizer.init)(params),
                                          step=jnp.zeros((), jnp.int32)), device)
        out_shardings = None
    else:
        # Every leaf of the state placed explicitly: the optimizer's moments like their params
        # (a plain jit of `init` leaves zeros it creates on one device), scalars replicated. The
        # new state keeps exactly these shardings, so donated buffers are reused in place.
        replicated = NamedSharding(mesh, PartitionSpec())
        opt_shardings = _shardings_like_params(jax.eval_shape(optimizer.init, params), params, replicated)
        opt_state = jax.jit(optimizer.init, out_shardings=opt_shardings)(params)
        state = TrainState(params=params, opt_state=opt_state,
                           step=jax.device_put(jnp.zeros((), jnp.int32), replicated))
        out_shardings = (jax.tree.map(lambda x: x.sharding, state),
                         (replicated, replicated) if with_grad_norm else replicated)

    @functools.partial(jax.jit, donate_argnums=(0,), out_shardings=out_shardings)
    def jitted_train_step(state: TrainState, frozen, batch: Mapping, dropout_rng):
        loss, grads = jax.value_and_grad(functools.partial(_loss, graphdef))(state.params, frozen, batch,
                                                                             dropout_rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(params=params, opt_state=opt_state, step=state.step + 1)
        return new_state, ((loss, optax.tree.norm(grads)) if with_grad_norm else loss)

    def train_step(state: TrainState, batch: Mapping, dropout_rng=None):
        with activation_mesh(mesh):  # JAX's mesh context: activations pinned, traced per mesh
            return jitted_train_step(state, frozen, batch, dropout_rng)

    return state, train_step


def _shardings_like_params(abstract_tree, params, default):
    """A sharding for each leaf of `abstract_tree` (an optimizer state): that of the parameter whose
    path its path ends with (Adam's mu and nu mirror the params' tree), else `default`."""
    by_path = {path: leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)}

    def sharding_for(path, leaf):
        for start in range(len(path)):
            param = by_path.get(tuple(path[start:]))
            if param is not None and param.shape == leaf.shape:
                return param.sharding
        return default

    return jax.tree_util.tree_map_with_path(sharding_for, abstract_tree)


def make_eval_step(model) -> Callable:
    """`loss, outputs = eval_step(params, batch)`: no dropout, no update; `params` from a TrainState."""
    graphdef, _ = nnx.split(model)

    @jax.jit
    def jitted_eval_step(params, batch: Mapping):
        out = nnx.merge(graphdef, params)(**batch)
        return out.loss, out

    def eval_step(params, batch: Mapping):
        with activation_mesh(mesh_of(params)):  # JAX's mesh context: traced per mesh
            return jitted_eval_step(params, batch)

    return eval_step


def model_from_state(model, state: TrainState, trainable=None):
    """The model with the trained parameters of `state` (the structure of `model`; `trainable` as
    given to `make_train_step`)."""
    graphdef, _, frozen = _split(model, trainable)
    return nnx.merge(graphdef, state.params, *frozen)


def _split(model, trainable):
    """(graphdef, trained leaves, (the other leaves,) or ())."""
    if trainable is None:
        graphdef, params = nnx.split(model)
        return graphdef, params, ()
    graphdef, params, rest = nnx.split(model, trainable, ...)
    return graphdef, params, (rest,)
