"""Training: jitted train / eval steps over (optionally sharded) parameters, with optax."""

from xlmr_jax.training.checkpoint import restore_train_state, save_train_state
from xlmr_jax.training.optim import learning_rate_of, make_optimizer, make_schedule
from xlmr_jax.training.steps import TrainState, make_eval_step, make_train_step, model_from_state

__all__ = [
    "TrainState",
    "learning_rate_of",
    "make_eval_step",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "model_from_state",
    "restore_train_state",
    "save_train_state",
]
