"""masked-lm and causal-lm (the reference's run_mlm.py / run_clm.py) on a `text` column.

With `pack` (the default, as the reference's), the lines become one stream, each line's tokens
followed by `</s>`, cut into rows of `<s>` + `max_length - 1` tokens: RoBERTa's FULL-SENTENCES
(rows cross line boundaries; no padding but in the last row, which keeps the end of the text
rather than dropping it as run_mlm does). Without it every line is one row, truncated to
`max_length`. Blank lines are skipped, as the reference does.

Masked-LM features hold only `input_ids`/`attention_mask`: the loop masks each batch anew
(`Run.lm_inputs`, the reference collator's 80/10/10 recipe in training/masking.py). Causal-LM labels
are the input ids (padding -100); the model shifts them (position t predicts t + 1).

Evaluation is the loop's (the loss and perplexity over the validation rows): `evaluate` returns {}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, ClassVar

import numpy as np

from xlmr_jax.finetune.features import IGNORE_INDEX, FeatureSet, check_max_length, token_lengths
from xlmr_jax.finetune.records import EmptyDataError, text_column, where
from xlmr_jax.finetune.tasks import Split, TaskBase


class _LanguageModelingTask(TaskBase):
    default_columns: ClassVar[dict[str, str]] = {"text": "text"}
    required_columns = ("text",)
    output_names = ()
    causal = False

    def features(self, records: Sequence[dict], tokenizer, split: Split) -> FeatureSet:
        check_max_length(self.name, self.options.max_length, tokenizer, 3)
        texts = text_column(records, "text")
        kept = [index for index, text in enumerate(texts) if text.strip()]
        if not kept:
            raise EmptyDataError(f"{self.name}: every {split} text is blank ({where(records, 0)} ...)")
        lines = [texts[index] for index in kept]
        if self.options.pack:
            input_ids, lengths, first_line = _packed_rows(lines, tokenizer, self.options.max_length)
        else:
            encoded = tokenizer(lines, truncation=True, max_length=self.options.max_length, padding="max_length")
            input_ids = encoded["input_ids"].astype(np.int32)
            lengths, first_line = token_lengths(encoded["attention_mask"]), np.arange(len(lines))
        attention_mask = (np.arange(input_ids.shape[1])[None, :] < lengths[:, None]).astype(np.int32)
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask}
        pad_values = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0}
        if self.causal:
            arrays["labels"] = np.where(attention_mask == 1, input_ids, IGNORE_INDEX).astype(np.int32)
            pad_values["labels"] = IGNORE_INDEX
        example_index = np.asarray(kept, dtype=np.int32)[first_line]
        return FeatureSet(arrays, tuple(arrays), pad_values, lengths, example_index)

    def evaluate(self, feature_set: FeatureSet, outputs: Mapping[str, np.ndarray],
                 records: Sequence[dict]) -> dict[str, float]:
        return {}  # the loop computes the loss (and perplexity) itself


class MaskedLanguageModelingTask(_LanguageModelingTask):
    name = "masked-lm"
    model_class_name = "XLMRobertaForMaskedLM"


class CausalLanguageModelingTask(_LanguageModelingTask):
    name = "causal-lm"
    model_class_name = "XLMRobertaForCausalLM"
    causal = True

    def model_config(self) -> dict[str, Any]:
        return {"is_decoder": True}  # XLMRobertaForCausalLM refuses a config without it


def _packed_rows(lines: list[str], tokenizer, max_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, lengths, index of the line each row starts in) of the packed stream."""
    pieces = tokenizer(lines, add_special_tokens=False, return_tensors=None, return_attention_mask=False)["input_ids"]
    eos = [tokenizer.eos_token_id]
    stream = np.fromiter(chain.from_iterable(chain(ids, eos) for ids in pieces), dtype=np.int32)
    line_of_token = np.repeat(np.arange(len(lines)), [len(ids) + 1 for ids in pieces])
    body = max_length - 1  # each row starts with <s>
    if len(stream) > body and len(stream) % body == 1:
        stream = stream[:-1]  # a last row would hold only the final </s>
    rows = -(-len(stream) // body)
    lengths = np.full(rows, max_length, dtype=np.int32)
    lengths[-1] = len(stream) - (rows - 1) * body + 1
    padded = np.full(rows * body, tokenizer.pad_token_id, dtype=np.int32)
    padded[:len(stream)] = stream
    input_ids = np.concatenate([np.full((rows, 1), tokenizer.bos_token_id, dtype=np.int32),
                                padded.reshape(rows, body)], axis=1)
    return input_ids, lengths, line_of_token[np.arange(rows) * body]
