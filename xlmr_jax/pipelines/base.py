"""The engine every pipeline shares: inputs -> features -> length-bucketed static batches through
one jitted function -> per-input results, in input order.

A task says three things (one file each under `pipelines/`): how an input becomes features
(`preprocess`; a long QA context becomes several windows), what the device computes for a batch
(`compute`, a pure function of the model and padded arrays, jitted once per shape), and how the
outputs of an input's features become the reference pipeline's result (`postprocess`).

Why it is fast: features are sorted by length and cut into batches, each padded to the smallest of
a few length buckets and to a power-of-two number of rows, so a stream of texts compiles a handful
of programs and pads little; the parameters go into the jitted function as an argument (nothing is
copied per call); compiled programs live as long as the pipeline. With a mesh, each batch is split
over its `data` x `fsdp` devices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import numpy as np
from flax import nnx

from xlmr_jax.sharding import activation_mesh, shard_batch

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)
# Arrays aligned with the tokens: padded to the length bucket; every other array of a feature
# (mask positions, ...) is padded to the next power of two of its longest in the batch.
TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclasses.dataclass
class Feature:
    """One row for the model: 1-D arrays (`input_ids` fixes the length), the input it came from,
    and whatever `postprocess` needs to read the outputs (offsets, the window's place, ...)."""

    arrays: dict[str, np.ndarray]
    source: int
    meta: Any = None

    @property
    def length(self) -> int:
        return len(self.arrays["input_ids"])


class Pipeline:
    """Call with one input or a list of them; returns one result or a list, as the reference does."""

    task: ClassVar[str]
    model_class: ClassVar[type]  # the head the task needs (from_pretrained of a path loads this class)
    defaults: ClassVar[dict[str, Any]] = {}  # the task's options and their defaults
    # Extra from_pretrained arguments when `pipeline()` loads a path (e.g. no pooler where none is used).
    load_kwargs: ClassVar[dict[str, Any]] = {}

    @classmethod
    def checkpoint_options(cls, directory: str) -> dict[str, Any]:
        """Option defaults that a checkpoint directory sets (e.g. a sentence-transformers pooling), read
        by `pipeline()` before any weight; options given to `pipeline()` override them."""
        return {}

    def __init__(self, model, tokenizer, *, batch_size: int = 8, buckets: Sequence[int] | None = DEFAULT_BUCKETS,
                 mesh=None, **options):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if buckets is not None and (not buckets or any(not isinstance(b, int) or b < 1 for b in buckets)):
            raise ValueError(f"buckets must be positive integers (or None: pad to the longest), got {buckets!r}")
        self.model, self.tokenizer = model, tokenizer
        self.config = model.config
        self.batch_size, self.mesh = batch_size, mesh
        self.max_length = min(self.config.max_sequence_length, tokenizer.model_max_length or 10**9)
        # None: each batch padded to its longest row (a program per length seen; for comparison)
        self.buckets = None if buckets is None else (
            tuple(sorted(b for b in buckets if b < self.max_length)) + (self.max_length,))
        self.options = self.check_options({**self.defaults, **options})
        graphdef, self._state = nnx.split(model)

        def pure(state, batch, static):
            return self.compute(nnx.merge(graphdef, state), batch, static)

        self._jitted = jax.jit(pure, static_argnums=(2,))

    # -- what a task defines -------------------------------------------------------------------------

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.task}: unknown option(s) {unknown}; this task takes {sorted(self.defaults)}")
        return options

    def is_single(self, inputs) -> bool:
        return isinstance(inputs, str)

    def preprocess(self, item, index: int, options: Mapping[str, Any]) -> list[Feature]:
        raise NotImplementedError

    def static(self, options: Mapping[str, Any]) -> Any:
        """Hashable options that shape the compiled program (e.g. top_k); None by default."""
        return None

    def compute(self, model, batch: Mapping[str, jax.Array], static) -> dict[str, jax.Array]:
        raise NotImplementedError

    def postprocess(self, item, features: list[Feature], outputs: list[dict[str, np.ndarray]],
                    options: Mapping[str, Any]):
        raise NotImplementedError

    # -- the engine ----------------------------------------------------------------------------------

    def __call__(self, inputs, **options):
        options = self.check_options({**self.options, **options})
        single = self.is_single(inputs)
        items = [inputs] if single else list(inputs)
        if not items:
            return []
        features = [feature for index, item in enumerate(items) for feature in self.preprocess(item, index, options)]
        outputs = self.run(features, self.static(options))
        by_source: list[list[int]] = [[] for _ in items]
        for position, feature in enumerate(features):
            by_source[feature.source].append(position)
        results = [self.postprocess(item, [features[p] for p in by_source[i]], [outputs[p] for p in by_source[i]],
                                    options) for i, item in enumerate(items)]
        return results[0] if single else results

    def run(self, features: list[Feature], static=None) -> list[dict[str, np.ndarray]]:
        """Outputs of every feature (its rows of each output, batch axis removed), in feature order."""
        outputs: list[dict[str, np.ndarray] | None] = [None] * len(features)
        for chunk in self._batches(features):
            batch = self._padded_batch([features[i] for i in chunk])
            if self.mesh is not None:
                batch = shard_batch(batch, self.mesh)
            with activation_mesh(self.mesh):
                result = jax.device_get(self._jitted(self._state, batch, static))
            for row, index in enumerate(chunk):
                outputs[index] = {name: value[row] for name, value in result.items()}
        return outputs

    def _batches(self, features: list[Feature]) -> list[list[int]]:
        """Feature indices in batches of at most `batch_size`, longest first. With buckets, a batch
        never spans two of them: one long text does not drag a batch of short ones up to its bucket
        (it gets a batch of its own, of fewer rows)."""
        order = sorted(range(len(features)), key=lambda i: -features[i].length)
        if self.buckets is None:
            return [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        batches: list[list[int]] = []
        for index in order:
            size = self.bucket(features[index].length)
            if batches and len(batches[-1]) < self.batch_size and self.bucket(features[batches[-1][0]].length) == size:
                batches[-1].append(index)
            else:
                batches.append([index])
        return batches

    def bucket(self, length: int) -> int:
        for size in self.buckets or ():
            if length <= size:
                return size
        return length

    def _rows(self, count: int) -> int:
        if self.mesh is not None:  # every batch the same number of rows, divisible over the mesh
            return self.batch_size
        return min(self.batch_size, power_of_two_at_least(count))

    def _padded_batch(self, features: list[Feature]) -> dict[str, np.ndarray]:
        rows = self._rows(len(features))
        # Rows beyond the real ones repeat the first (well-defined numbers, discarded afterwards).
        features = features + [features[0]] * (rows - len(features))
        length = self.bucket(max(f.length for f in features))
        batch = {}
        for key in features[0].arrays:
            width = length if key in TOKEN_KEYS else power_of_two_at_least(max(len(f.arrays[key]) for f in features))
            fill = self.pad_value(key)
            array = np.full((rows, width), fill, dtype=features[0].arrays[key].dtype)
            for row, feature in enumerate(features):
                values = feature.arrays[key]
                array[row, :len(values)] = values
            batch[key] = array
        if "attention_mask" not in batch:
            batch["attention_mask"] = np.zeros((rows, length), np.int32)
            for row, feature in enumerate(features):
                batch["attention_mask"][row, :feature.length] = 1
        return batch

    def pad_value(self, key: str) -> int:
        return self.config.pad_token_id if key == "input_ids" else 0


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def power_of_two_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()
