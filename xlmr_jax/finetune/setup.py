"""Everything a run needs, checked and loaded before anything is written: the task, the data and
its features, the model (on the mesh), the optimizer, the step, the iterators, the checkpoints."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from xlmr_jax.finetune import run_directory
from xlmr_jax.finetune.config import FinetuneConfig
from xlmr_jax.finetune.evaluation import make_lm_eval, make_predict


@dataclasses.dataclass
class Run:
    config: FinetuneConfig
    output: str
    task: Any
    tokenizer: Any
    model: Any                      # the structure (graphdef) of the model; its params live in the state
    mesh: Any
    initial_state: Any
    train_step: Callable
    train_batches: Any              # resumable BatchIterator over the training features
    batches_per_epoch: int
    total_steps: int
    accumulation: int
    dropout: bool
    checkpoints: Any                # RunCheckpoints, opened by open_checkpoints once OUTPUT is ready
    validation: Any                 # FeatureSet or None
    validation_records: list | None
    eval_batch_size: int
    buckets: tuple[int, ...]
    predict: Callable | None
    lm_eval: Callable | None
    vocab_size: int
    trainable: Any = None           # an nnx filter when only some leaves train (LoRA), else None

    def place(self, batch: dict[str, np.ndarray]):
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, batch)
        from xlmr_jax.sharding import shard_batch

        return shard_batch(batch, self.mesh)

    def next_train_batch(self, micro_step: int) -> tuple[Any, int]:
        """The placed batch of `micro_step` and its real token count on this process."""
        batch = next(self.train_batches)
        batch.pop("__valid__", None)
        batch.pop("__index__", None)
        if self.config.task in ("masked-lm", "causal-lm"):
            batch = self.lm_inputs(batch, seed_parts=(0, micro_step))
        tokens = int(np.sum(batch["attention_mask"]))
        return self.place(batch), tokens

    def lm_inputs(self, batch: dict[str, np.ndarray], *, seed_parts: tuple[int, int]) -> dict[str, np.ndarray]:
        """Masked-LM: masks drawn from (seed, process, split, index), so a resumed run draws the same,
        with the model's `masked_positions` (the vocabulary projection runs only where a token is
        masked) and the labels at them; causal LM: labels are the inputs (the model shifts them),
        padding ignored."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if self.config.task == "causal-lm":
            return dict(batch, labels=np.where(mask.astype(bool), ids, -100).astype(np.int32))
        from xlmr_jax.training.masking import masked_lm_batch

        rng = np.random.default_rng([self.config.seed, jax.process_index(), *seed_parts])
        return masked_lm_batch(batch, special_ids=self.tokenizer.all_special_ids,
                               mask_token_id=self.tokenizer.mask_token_id, vocab_size=self.vocab_size, rng=rng,
                               probability=self.config.mlm_probability)

    def eval_batches(self):
        from xlmr_jax.finetune.batches import BatchIterator

        features = self.validation
        return BatchIterator(features.arrays, features.lengths, sequence_keys=features.sequence_keys,
                             pad_values=features.pad_values, global_batch_size=self.eval_batch_size,
                             buckets=self.buckets, shuffle=False, seed=0, num_epochs=1,
                             process_index=jax.process_index(), process_count=jax.process_count(),
                             drop_remainder=False)


def prepare_run(config: FinetuneConfig) -> Run:
    import xlmr_jax
    from xlmr_jax.finetune.batches import BatchIterator
    from xlmr_jax.finetune.tasks import make_task
    from xlmr_jax.pretrained import resolve_pretrained_path
    from xlmr_jax.sharding import make_mesh
    from xlmr_jax.tokenizer import XLMRobertaTokenizer
    from xlmr_jax.training.optim import make_optimizer
    from xlmr_jax.training.steps import make_train_step

    processes = jax.process_count()
    if config.batch_size % processes:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {processes} processes")
    directory = resolve_pretrained_path(config.model)
    sources = [directory, config.train_file] + ([config.validation_file] if config.validation_file else [])
    output = run_directory.check_output(config, sources)
    tokenizer = XLMRobertaTokenizer.from_pretrained(directory)
    task = make_task(config.task, config.task_options())
    train_records = task.read(config.train_file, config.columns)
    task.fit_labels(train_records)
    train_features = task.features(train_records, tokenizer, "train")
    validation, validation_records = None, None
    if config.validation_file:
        validation_records = task.read(config.validation_file, config.columns)
        task.check_labels(validation_records, "validation")
        validation = task.features(validation_records, tokenizer, "validation")

    mesh = _mesh(config, make_mesh)
    overrides = dict(task.model_config())
    overrides.pop("label2id", None)  # derived from id2label when the config is written
    if config.dropout is not None:
        overrides.update(hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout)
    overrides["unroll_layers"] = config.unroll_layers
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    model_class = getattr(xlmr_jax, task.model_class_name)
    if config.quantization is not None:
        overrides["quantization"] = config.quantization
    model = model_class.from_pretrained(directory, dtype=dtype, param_dtype=jnp.float32, seed=config.seed,
                                        mesh=mesh, rules=config.rules if mesh is not None else None, **overrides)
    model, trainable = _with_adapters(config, model)
    dropout = model.config.hidden_dropout_prob > 0 or model.config.attention_probs_dropout_prob > 0

    buckets = config.resolved_buckets()
    train_batches = BatchIterator(
        train_features.arrays, train_features.lengths, sequence_keys=train_features.sequence_keys,
        pad_values=train_features.pad_values, global_batch_size=config.batch_size, buckets=buckets,
        shuffle=True, seed=config.seed, num_epochs=None, process_index=jax.process_index(),
        process_count=processes, drop_remainder=True,
    )
    batches_per_epoch = train_batches.batches_per_epoch
    total_steps = config.total_steps(batches_per_epoch)
    params = nnx.state(model, trainable if trainable is not None else nnx.Param)
    optimizer = make_optimizer(
        params, learning_rate=config.learning_rate, total_steps=total_steps, warmup_steps=config.warmup_steps,
        warmup_ratio=config.warmup_ratio, schedule=config.schedule, weight_decay=config.weight_decay,
        adam_b1=config.adam_b1, adam_b2=config.adam_b2, adam_eps=config.adam_eps,
        max_grad_norm=config.max_grad_norm, gradient_accumulation_steps=config.gradient_accumulation_steps,
        layerwise_lr_decay=config.layerwise_lr_decay,
    )
    if config.on_nonfinite == "skip":
        # optax's guard: an update with a non-finite gradient leaves params and moments unchanged.
        optimizer = optax.apply_if_finite(optimizer, max_consecutive_errors=2**30)
    if trainable is not None:  # evaluation merges the trained leaves with the frozen rest
        graphdef, _, rest = nnx.split(model, trainable, ...)
        frozen = (rest,)
    else:
        graphdef, frozen = nnx.graphdef(model), ()
    state, train_step = make_train_step(model, optimizer, with_grad_norm=True, trainable=trainable)
    is_lm = config.task in ("masked-lm", "causal-lm")
    return Run(
        config=config, output=output, task=task, tokenizer=tokenizer, model=model, mesh=mesh,
        initial_state=state, train_step=train_step, train_batches=train_batches,
        batches_per_epoch=batches_per_epoch, total_steps=total_steps,
        accumulation=config.gradient_accumulation_steps, dropout=dropout, checkpoints=None,  # opened once OUTPUT is ready
       
        validation=validation, validation_records=validation_records,
        eval_batch_size=config.eval_batch_size or config.batch_size, buckets=buckets,
        predict=None if is_lm else make_predict(graphdef, frozen, task.output_names, mesh),
        lm_eval=make_lm_eval(graphdef, frozen, config.task == "causal-lm", mesh) if is_lm else None,
        trainable=trainable,
        vocab_size=model.config.vocab_size,
    )


# The task head that trains with the adapters (it is new for the task); language models train adapters only.
TASK_HEADS = {"XLMRobertaForSequenceClassification": "classifier", "XLMRobertaForTokenClassification": "classifier",
              "XLMRobertaForMultipleChoice": "classifier", "XLMRobertaForQuestionAnswering": "qa_outputs"}


def _with_adapters(config: FinetuneConfig, model):
    """(model, trainable filter): LoRA adapters added when asked (with a quantised base, the head
    to train is dequantised first), else the model and None (every parameter trains)."""
    if config.lora_rank is None:
        return model, None
    from xlmr_jax.quantization import add_lora, dequantize_model, lora_filter

    head = TASK_HEADS.get(type(model).__name__)
    if head is not None and config.quantization is not None:
        dequantize_model(model, under=head)
    targets = tuple(t.strip() for t in config.lora_targets.split(",") if t.strip())
    model = add_lora(model, config.lora_rank, config.lora_alpha, targets, seed=config.seed)
    trainable = lora_filter if head is None else nnx.Any(lora_filter, nnx.All(nnx.Param, nnx.PathContains(head)))
    return model, trainable


def open_checkpoints(run: Run) -> None:
    from xlmr_jax.finetune.checkpoints import RunCheckpoints

    run.checkpoints = RunCheckpoints(f"{run.output}/{run_directory.CHECKPOINTS}", keep=run.config.keep_checkpoints,
                                     metric=run.config.metric_name, greater_is_better=run.config.greater_is_better)


def _mesh(config: FinetuneConfig, make_mesh):
    """None on one device (no mesh needed: the plain jit path); else the mesh the spec names."""
    if config.mesh is None or (config.mesh == "auto" and jax.device_count() == 1):
        return None
    return make_mesh(config.mesh)
