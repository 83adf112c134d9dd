"""From planned windows to the final rows (special tokens added), then to padded output.

Every output field (ids, special-token mask, offsets, attention mask) shares one layout, so the
index arithmetic is done once per call and each field is a single gather/scatter over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xlmr_jax.tokenization.batch_encoding import BatchEncoding
from xlmr_jax.tokenization.pieces import EncodedTexts
from xlmr_jax.tokenization.ragged import Ragged, run_positions
from xlmr_jax.tokenization.truncation import WindowPlan
from xlmr_jax.tokenization.vocab import BOS_ID, EOS_ID, PAD_ID


@dataclass(frozen=True)
class Assembled:
    """Final rows before padding: ids, special-token mask, offsets, and each row's example index."""

    ids: Ragged
    special_mask: Ragged
    offsets: Ragged | None
    sample: np.ndarray


@dataclass(frozen=True)
class OutputRequest:
    """Which fields to return, and how."""

    return_tensors: str | None
    attention_mask: bool
    token_type_ids: bool
    special_tokens_mask: bool
    overflow: bool
    batched: bool


@dataclass(frozen=True)
class _Window:
    """One text column of the layout: where its tokens come from in the encoded batch."""

    encoded: EncodedTexts
    source: np.ndarray  # flat indices into encoded.ids.values, row after row
    lengths: np.ndarray


def _window(encoded: EncodedTexts, rows: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> _Window:
    lengths = (stops - starts).astype(np.int64)
    return _Window(encoded, run_positions(lengths, encoded.ids.starts[rows] + starts), lengths)


def assemble(
    first: EncodedTexts, second: EncodedTexts | None, plan: WindowPlan, add_special_tokens: bool
) -> Assembled:
    """Cut the planned windows and lay them out as ``<s> A </s>`` or ``<s> A </s></s> B </s>``."""
    columns: list[int | _Window] = [_window(first, plan.sample, plan.first_start, plan.first_stop)]
    if second is not None:
        columns += [EOS_ID, EOS_ID, _window(second, plan.sample, plan.second_start, plan.second_stop)]
    if add_special_tokens:
        columns = [BOS_ID, *columns, EOS_ID]
    else:
        columns = [column for column in columns if isinstance(column, _Window)]

    ones = np.ones(len(plan.sample), dtype=np.int64)
    column_lengths = [ones if isinstance(column, int) else column.lengths for column in columns]
    lengths = np.sum(column_lengths, axis=0)
    total = int(lengths.sum())
    with_offsets = first.offsets is not None
    ids = np.empty(total, dtype=np.int32)
    special_mask = np.zeros(total, dtype=np.int32)
    offsets = np.zeros((total, 2), dtype=np.int32) if with_offsets else None

    cursor = np.cumsum(lengths) - lengths  # where each row's next column starts in the flat output
    for column, column_length in zip(columns, column_lengths, strict=True):
        if isinstance(column, int):
            ids[cursor] = column
            special_mask[cursor] = 1  # special tokens keep (0, 0) offsets
        else:
            positions = run_positions(column.lengths, cursor)
            ids[positions] = column.encoded.ids.values[column.source]
            if offsets is not None:
                offsets[positions] = column.encoded.offsets.values[column.source]
        cursor = cursor + column_length
    return Assembled(
        Ragged(ids, lengths),
        Ragged(special_mask, lengths),
        None if offsets is None else Ragged(offsets, lengths),
        plan.sample,
    )


def package(assembled: Assembled, width: int | None, request: OutputRequest) -> BatchEncoding:
    """Pad and convert to int32 arrays or lists, keys in the reference's order."""
    ids = assembled.ids
    fields: dict[str, tuple[Ragged, Any]] = {"input_ids": (ids, PAD_ID)}
    if request.token_type_ids:
        # XLM-R has a single segment type: every position is type 0.
        fields["token_type_ids"] = (Ragged(np.zeros_like(ids.values), ids.lengths), 0)
    if request.attention_mask:
        fields["attention_mask"] = (Ragged(np.ones_like(ids.values), ids.lengths), 0)
    if request.special_tokens_mask:
        fields["special_tokens_mask"] = (assembled.special_mask, 1)
    if assembled.offsets is not None:
        fields["offset_mapping"] = (assembled.offsets, (0, 0))
    if request.return_tensors == "np":
        width = _dense_width(ids.lengths, width)
        cells = np.arange(width) < ids.lengths[:, None]  # the same cells hold data in every field
        output: dict[str, Any] = {name: _dense(ragged, cells, pad) for name, (ragged, pad) in fields.items()}
        if request.overflow:
            output["overflow_to_sample_mapping"] = assembled.sample.astype(np.int32)
        return BatchEncoding(output)
    output = {name: _padded_lists(ragged, width, pad) for name, (ragged, pad) in fields.items()}
    if request.overflow:
        output["overflow_to_sample_mapping"] = assembled.sample.tolist()
    elif not request.batched:
        output = {name: rows[0] for name, rows in output.items()}
    return BatchEncoding(output)


def _dense(ragged: Ragged, cells: np.ndarray, pad: Any) -> np.ndarray:
    dense = np.empty((*cells.shape, *ragged.values.shape[1:]), dtype=np.int32)
    dense[...] = pad
    # Row-major boolean assignment visits the data cells exactly in ``values`` order.
    dense[cells] = ragged.values
    return dense


def _dense_width(lengths: np.ndarray, width: int | None) -> int:
    """Width of the numpy output; rows must all fit (padding) or all be equally long."""
    longest = int(lengths.max()) if len(lengths) else 0
    if width is None:
        if len(lengths) and int(lengths.min()) != longest:
            raise ValueError(
                f"rows have different lengths ({int(lengths.min())} to {longest} tokens) and no padding "
                f"was asked for; pass padding=True (or buckets=...) for an array, or return_tensors=None"
            )
        return longest
    if longest > width:
        raise ValueError(
            f"a row has {longest} tokens, more than the padded width {width}; pass truncation=True "
            f"(padding='max_length' does not truncate on its own)"
        )
    return width


def _padded_lists(ragged: Ragged, width: int | None, pad: Any) -> list[list]:
    """Rows as lists; with a width, shorter rows are padded (longer ones are left, like the reference)."""
    rows = ragged.to_lists()
    if width is None:
        return rows
    return [row + [pad] * (width - len(row)) if len(row) < width else row for row in rows]
