"""Texts into ids for the pipelines, with the errors a user needs (which input, what was wrong)."""

from __future__ import annotations

import numpy as np


def encode_text(pipeline, text, index: int, *, pair=None, truncation: bool | str = False) -> np.ndarray:
    """The ids of one input (`<s> text </s>`, or with `pair` `<s> text </s></s> pair </s>`) as int32.
    Longer than the model takes: truncated when `truncation` asks for it, else a clear error."""
    for name, value in (("text", text), ("text pair", pair)):
        if not isinstance(value, str) and (value is not None or name == "text"):
            raise TypeError(f"{pipeline.task}: input {index}: the {name} must be a str, got {type(value).__name__}")
    limits = dict(truncation=truncation, max_length=pipeline.max_length) if truncation else {}
    ids = pipeline.tokenizer.encode(text, pair, **limits)
    if len(ids) > pipeline.max_length:
        raise ValueError(f"{pipeline.task}: input {index} is {len(ids)} tokens, more than the model's "
                         f"{pipeline.max_length}; pass truncation=True to cut it")
    return np.asarray(ids, dtype=np.int32)
