"""question-answering (the reference's run_qa.py): extractive QA on SQuAD-style records
`{id, question, context, answers: {"text": [...], "answer_start": [...]}}`.

Features: `<s> question </s></s> part of the context </s>` windows of `max_length` tokens sharing
`doc_stride` tokens (the question's leading spaces stripped, as run_qa does). Every window gets
`start_positions`/`end_positions` of the record's first answer, or of `<s>` (index 0) when the
answer is not wholly inside the window or the record has none. `FeatureSet.meta` holds each
window's `Window` (the context's token range and character offsets), as the inference pipeline's.

Evaluation, as run_qa's post-processing: over all windows of a record, the best span of the
context (start <= end, at most `max_answer_length` tokens) by start logit + end logit is the
answer. With `version_2_with_negative` the null score is the smallest `<s>` start + end logits over
the windows, and the answer is "" when it beats the best span by more than
`null_score_diff_threshold`. One difference: run_qa searches only the 20 best start and 20 best end
logits of each window; the best span here is searched over every pair, so it is the exact best.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from xlmr_jax.finetune.features import FeatureSet, check_max_length, token_lengths
from xlmr_jax.finetune.records import DataError, text_column, where
from xlmr_jax.finetune.tasks import Split, TaskBase
from xlmr_jax.pipelines.answer_spans import Window, best_spans, masked_softmax
from xlmr_jax.tokenization.vocab import META_SPACE

CLS_INDEX = 0


class QuestionAnsweringTask(TaskBase):
    name = "question-answering"
    model_class_name = "XLMRobertaForQuestionAnswering"
    default_columns: ClassVar[dict[str, str]] = {"id": "id", "question": "question", "context": "context", "answers": "answers"}
    required_columns = ("question", "context", "answers")
    output_names = ("start_logits", "end_logits")

    def check_labels(self, records: Sequence[dict], split: Split) -> None:
        """Answers are {"text": [...], "answer_start": [...]} lists that match the context; ids are distinct."""
        seen: dict[str, int] = {}
        misplaced = []  # every answer not found where it says: one error listing how many
        for index, record in enumerate(records):
            answers, context = record.get("answers"), record.get("context")
            place = f"{split} data, {where(records, index)}"
            if (not isinstance(answers, dict) or not isinstance(answers.get("text"), list)
                    or not isinstance(answers.get("answer_start"), list)
                    or len(answers["text"]) != len(answers["answer_start"])):
                raise DataError(f"{place}: 'answers' must be {{'text': [...], 'answer_start': [...]}} with one start "
                                f"per text, got {answers!r:.100}")
            for text, start in zip(answers["text"], answers["answer_start"], strict=True):
                if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int) or start < 0:
                    raise DataError(f"{place}: an answer needs a text (str) and an answer_start (int), got "
                                    f"{text!r:.60} at {start!r}")
                if isinstance(context, str) and context[start:start + len(text)] != text:
                    misplaced.append(f"{place}: the answer {text!r:.60} is not at character {start} of the "
                                     f"context (found {context[start:start + len(text)]!r:.60})")
            if not self.options.version_2_with_negative and split == "validation" and not answers["text"]:
                raise DataError(f"{place}: the question has no answer; set version_2_with_negative for data with "
                                f"unanswerable questions")
            identifier = _record_id(record, index)
            if identifier in seen:
                raise DataError(f"{place}: id {identifier!r} is also the id of record {seen[identifier]}")
            seen[identifier] = index
        if misplaced:
            more = f" (and {len(misplaced) - 3} more)" if len(misplaced) > 3 else ""
            raise DataError(f"{len(misplaced)} answers do not match their answer_start: " + "; ".join(misplaced[:3])
                            + more)

    def features(self, records: Sequence[dict], tokenizer, split: Split) -> FeatureSet:
        self.check_labels(records, split)
        max_length, stride = self.options.max_length, self.options.doc_stride
        check_max_length(self.name, max_length, tokenizer, 5)
        questions = [question.lstrip() for question in text_column(records, "question")]
        contexts = text_column(records, "context")
        question_tokens = np.fromiter(
            map(len, tokenizer(questions, add_special_tokens=False, return_tensors=None,
                               return_attention_mask=False)["input_ids"]), dtype=np.int64, count=len(questions))
        try:
            encoded = tokenizer(questions, contexts, truncation="only_second", max_length=max_length, stride=stride,
                                return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
        except ValueError as error:
            raise self._window_error(records, question_tokens, contexts, tokenizer) from error
        input_ids = encoded["input_ids"].astype(np.int32)
        mask = encoded["attention_mask"].astype(np.int32)
        sample = encoded["overflow_to_sample_mapping"].astype(np.int32)
        lengths = token_lengths(mask)
        # as the pipeline's windows: a word starts at "▁", at a special token and right after one
        special = np.isin(input_ids, tokenizer.all_special_ids)
        starts_word = _word_start_table(tokenizer)[input_ids] | special
        starts_word[:, 1:] |= special[:, :-1]
        windows = [Window(int(question_tokens[r]) + 3, int(lengths[row]) - 1,  # <s> question </s></s> context </s>
                          encoded["offset_mapping"][row], starts_word[row]) for row, r in enumerate(sample.tolist())]
        positions = np.array([_answer_tokens(records[r]["answers"], window) for r, window in
                              zip(sample.tolist(), windows, strict=True)], dtype=np.int32).reshape(-1, 2)
        arrays = {"input_ids": input_ids, "attention_mask": mask,
                  "start_positions": positions[:, 0], "end_positions": positions[:, 1]}
        return FeatureSet(arrays, ("input_ids", "attention_mask"),
                          {"input_ids": tokenizer.pad_token_id, "attention_mask": 0}, lengths, sample, meta=windows)

    def evaluate(self, feature_set: FeatureSet, outputs: Mapping[str, np.ndarray],
                 records: Sequence[dict]) -> dict[str, float]:
        from xlmr_jax.finetune import metrics

        predictions = self.predictions(feature_set, outputs, records)
        references = {_record_id(record, index): list(record["answers"]["text"]) or [""]
                      for index, record in enumerate(records)}
        return metrics.squad_metrics(predictions, references)

    def predictions(self, feature_set: FeatureSet, outputs: Mapping[str, np.ndarray],
                    records: Sequence[dict]) -> dict[str, str]:
        """Record id -> answer text ("" for no answer) from the start/end logits of every window."""
        start_logits = np.asarray(outputs["start_logits"], dtype=np.float32)
        end_logits = np.asarray(outputs["end_logits"], dtype=np.float32)
        best: dict[int, tuple[float, str]] = {}
        null: dict[int, float] = {}
        for row, record_index in enumerate(feature_set.example_index.tolist()):
            window, length = feature_set.meta[row], int(feature_set.lengths[row])
            start, end = start_logits[row, :length], end_logits[row, :length]
            null[record_index] = min(null.get(record_index, np.inf), float(start[CLS_INDEX] + end[CLS_INDEX]))
            # the best span by probability product within a window is the best by logit sum
            for first, last, _ in best_spans(masked_softmax(start, window), masked_softmax(end, window), window,
                                              self.options.max_answer_length, 1):
                score = float(start[first] + end[last])
                if record_index not in best or score > best[record_index][0]:
                    context = records[record_index]["context"]
                    best[record_index] = (score, context[window.offsets[first][0]:window.offsets[last][1]])
        answers = {}
        for index, record in enumerate(records):
            score, text = best.get(index, (-np.inf, ""))
            if self.options.version_2_with_negative and null.get(index, np.inf) - score > \
                    self.options.null_score_diff_threshold:
                text = ""
            answers[_record_id(record, index)] = text
        return answers

    def model_config(self) -> dict[str, Any]:
        return {"num_labels": 2, "id2label": {0: "LABEL_0", 1: "LABEL_1"}, "label2id": {"LABEL_0": 0, "LABEL_1": 1}}

    def _window_error(self, records, question_tokens, contexts, tokenizer) -> DataError:
        """The record whose question leaves no room for windows of its context."""
        room = self.options.max_length - 4 - question_tokens
        context_tokens = [len(ids) for ids in tokenizer(contexts, add_special_tokens=False, return_tensors=None,
                                                        return_attention_mask=False)["input_ids"]]
        for index, (space, needed) in enumerate(zip(room.tolist(), context_tokens, strict=True)):
            if needed > space and space <= self.options.doc_stride:
                return DataError(f"{where(records, index)}: the question's {question_tokens[index]} tokens leave "
                                 f"{max(space, 0)} of max_length={self.options.max_length} for the context, which "
                                 f"must be more than doc_stride={self.options.doc_stride}; raise max_length, lower "
                                 f"doc_stride or shorten the question")
        return DataError(f"{self.name}: the records cannot be cut into windows of max_length={self.options.max_length}")


def _record_id(record: dict, index: int) -> str:
    return str(record["id"]) if record.get("id") is not None else str(index)


def _answer_tokens(answers: dict, window: Window) -> tuple[int, int]:
    """(start, end) token of the first answer when the window holds all of it, else (0, 0): `<s>`."""
    if not answers["text"]:
        return CLS_INDEX, CLS_INDEX
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    offsets = window.offsets[window.context_start:window.context_end]
    if len(offsets) == 0 or not (offsets[0, 0] <= start_char and offsets[-1, 1] >= end_char):
        return CLS_INDEX, CLS_INDEX
    # run_qa's walk: the last token starting at or before the answer, the first ending at or after it
    first = int(np.flatnonzero(offsets[:, 0] <= start_char)[-1])
    last = int(np.flatnonzero(offsets[:, 1] >= end_char)[0])
    return window.context_start + first, window.context_start + last


def _word_start_table(tokenizer) -> np.ndarray:
    """For every id, whether its piece begins a word (starts with "▁")."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return np.array([piece.startswith(META_SPACE) for piece in pieces], dtype=bool)
