"""The tokenizer's output container."""

from __future__ import annotations

from typing import Any


class BatchEncoding(dict):
    """A ``dict`` of model inputs (``input_ids``, ``attention_mask``, ...) with attribute access.

    With ``return_tensors="np"`` (the default) every value is an ``int32`` numpy array whose first
    axis is the batch, ready to pass to a jitted function; with ``return_tensors=None`` values are
    Python lists shaped like the reference's.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; fields: {sorted(self)}") from None

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self.keys()]
