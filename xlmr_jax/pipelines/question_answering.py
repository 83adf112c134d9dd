"""question-answering: the span of the context that answers the question, as transformers 4.x's
`pipeline("question-answering")` returns it ({"score", "start", "end", "answer"}; transformers 5
dropped this pipeline).

A context longer than `max_seq_len` tokens (with the question) is cut into windows that share
`doc_stride` tokens, each `<s> question </s></s> part of the context </s>`. In each window the start
and end logits outside the context (the question, `</s>`, padding; `<s>` excepted) are masked
before a softmax; a span scores p(start) * p(end), with start <= end < start + `max_answer_len`;
the best `2 * top_k + 10` spans of every window are mapped to characters (widened to whole words
with `align_to_words`), spans with the same text (ignoring case) add their scores, and the best
`top_k` are returned. With `handle_impossible_answer` the empty answer competes with the smallest
p(<s>) * p(<s>) over the windows. `max_question_len` is accepted and, as in the reference with a
fast tokenizer, changes nothing: the whole question goes into every window.

Inputs: `{"question": ..., "context": ...}` (or a list of them), `question=..., context=...`
(a list of questions may share one context), or two strings (question, context). As the reference
does, one input -- a list of one included -- gives one result: a dict, or a list when `top_k` finds
several answers (an empty list when none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from xlmr_jax.modeling import XLMRobertaForQuestionAnswering
from xlmr_jax.pipelines.answer_spans import Window, best_spans, masked_softmax, widen_to_words
from xlmr_jax.pipelines.base import Feature, Pipeline
from xlmr_jax.tokenization.vocab import META_SPACE

NO_NULL_SCORE = 1000000.0


class QuestionAnsweringPipeline(Pipeline):
    task = "question-answering"
    model_class = XLMRobertaForQuestionAnswering
    defaults: ClassVar[dict[str, Any]] = {
        "top_k": 1, "doc_stride": None, "max_answer_len": 15, "max_seq_len": None, "max_question_len": 64,
        "handle_impossible_answer": False, "align_to_words": True,
    }

    def check_options(self, options):
        options = super().check_options(options)
        for name in ("top_k", "max_answer_len", "max_question_len"):
            _check_int(self.task, name, options[name], 1)
        if options["max_seq_len"] is not None:
            _check_int(self.task, "max_seq_len", options["max_seq_len"], 5)
            if options["max_seq_len"] > self.max_length:
                raise ValueError(f"{self.task}: max_seq_len={options['max_seq_len']} is more than the "
                                 f"{self.max_length} tokens the model takes")
        if options["doc_stride"] is not None:
            _check_int(self.task, "doc_stride", options["doc_stride"], 0)
        max_seq_len, doc_stride = self._window(options)
        if doc_stride > max_seq_len:
            raise ValueError(f"{self.task}: doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})")
        for name in ("handle_impossible_answer", "align_to_words"):
            if not isinstance(options[name], bool):
                raise TypeError(f"{self.task}: {name} must be True or False, got {options[name]!r}")
        return options

    def _window(self, options: Mapping[str, Any]) -> tuple[int, int]:
        """max_seq_len and doc_stride, with the reference's defaults (384 and 128, or less for a model
        that takes fewer tokens)."""
        max_seq_len = options["max_seq_len"] or min(self.max_length, 384)
        doc_stride = options["doc_stride"] if options["doc_stride"] is not None else min(max_seq_len // 2, 128)
        return max_seq_len, doc_stride

    # -- inputs ----------------------------------------------------------------------------------------

    def __call__(self, *args, question=None, context=None, **options):
        """`qa({"question": q, "context": c})`, `qa([...])`, `qa(question=q, context=c)` or `qa(q, c)`."""
        items = self._collect(args, question, context)
        results = super().__call__(items, **options)
        return results[0] if len(items) == 1 else results

    def _collect(self, args: tuple, question, context) -> list:
        keywords = question is not None or context is not None
        if args and keywords:
            raise ValueError(f"{self.task}: give the inputs either as arguments or as question=/context=, not both")
        if len(args) == 2 and all(isinstance(a, str) for a in args):
            return [{"question": args[0], "context": args[1]}]
        if len(args) == 1:
            (inputs,) = args
            if isinstance(inputs, Mapping):
                return [inputs]
            if isinstance(inputs, Sequence) and not isinstance(inputs, str | bytes):
                return list(inputs)
            raise TypeError(f"{self.task}: inputs must be a dict {{'question': ..., 'context': ...}} or a list of "
                            f"them, got {type(inputs).__name__}")
        if args:
            raise TypeError(f"{self.task}: takes one input (a dict or a list of dicts) or two strings (question, "
                            f"context), got {len(args)} arguments")
        if question is None or context is None:
            missing = "context" if context is None else "question"
            raise ValueError(f"{self.task}: {missing}= is missing; give both question= and context=")
        if isinstance(question, str) and isinstance(context, str):
            return [{"question": question, "context": context}]
        if isinstance(question, list) and isinstance(context, str):
            return [{"question": q, "context": context} for q in question]
        if isinstance(question, list) and isinstance(context, list):
            if len(question) != len(context):
                raise ValueError(f"{self.task}: {len(question)} questions but {len(context)} contexts")
            return [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
        raise TypeError(f"{self.task}: question= and context= must be strings, a list of questions with one "
                        f"context, or two lists of the same length; got {type(question).__name__} and "
                        f"{type(context).__name__}")

    def is_single(self, inputs) -> bool:
        return False  # __call__ always passes a list and picks the single result itself

    def _checked_item(self, item, index: int) -> tuple[str, str]:
        if not isinstance(item, Mapping):
            raise TypeError(f"{self.task}: input {index} must be a dict with keys 'question' and 'context', "
                            f"got {type(item).__name__}")
        unknown = sorted(set(item) - {"question", "context"}, key=str)
        if unknown:
            raise ValueError(f"{self.task}: input {index} has unknown key(s) {unknown}; it takes 'question' and "
                             f"'context'")
        for key in ("question", "context"):
            if key not in item:
                raise ValueError(f"{self.task}: input {index} has no {key!r}; give a dict with keys 'question' "
                                 f"and 'context'")
            value = item[key]
            if not isinstance(value, str):
                raise TypeError(f"{self.task}: input {index}: the {key} must be a str, got {type(value).__name__}")
            if not value:
                raise ValueError(f"{self.task}: input {index}: the {key} is empty")
        return item["question"], item["context"]

    # -- the engine's three steps ----------------------------------------------------------------------

    def preprocess(self, item, index: int, options: Mapping[str, Any]) -> list[Feature]:
        question, context = self._checked_item(item, index)
        max_seq_len, doc_stride = self._window(options)
        question_length = len(self.tokenizer.encode(question, add_special_tokens=False))
        try:
            encoding = self.tokenizer(
                question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                return_overflowing_tokens=True, return_offsets_mapping=True, return_attention_mask=False,
                return_tensors=None,
            )
        except ValueError as error:  # the question leaves too little room for the context
            room = max_seq_len - question_length - 4
            raise ValueError(
                f"{self.task}: input {index}: the question's {question_length} tokens leave {max(room, 0)} of "
                f"max_seq_len={max_seq_len} for each window of the context, which must be more than "
                f"doc_stride={doc_stride}; shorten the question, raise max_seq_len or lower doc_stride"
            ) from error
        special = set(self.tokenizer.all_special_ids)
        features = []
        for ids in encoding["input_ids"]:
            features.append(Feature({"input_ids": np.asarray(ids, dtype=np.int32)}, index))
        for feature, offsets in zip(features, encoding["offset_mapping"], strict=True):
            ids = feature.arrays["input_ids"]
            # <s> question </s></s> context </s>: truncation="only_second" keeps the whole question
            start, end = question_length + 3, len(ids) - 1
            pieces = self.tokenizer.convert_ids_to_tokens(ids.tolist())
            is_special = np.array([token_id in special for token_id in ids.tolist()])
            # A word is what the reference's tokenizer calls one: text between spaces, and each special
            # token on its own (each sentencepiece word begins with "▁").
            starts_word = np.array([piece.startswith(META_SPACE) for piece in pieces]) | is_special
            starts_word[1:] |= is_special[:-1]
            feature.meta = Window(start, end, np.asarray(offsets, dtype=np.int64).reshape(-1, 2), starts_word)
        return features

    def compute(self, model, batch, static):
        out = model(batch["input_ids"], batch["attention_mask"])
        return {"start": out.start_logits.astype(jnp.float32), "end": out.end_logits.astype(jnp.float32)}

    def postprocess(self, item, features, outputs, options):
        top_k, align = options["top_k"], options["align_to_words"]
        per_window = top_k * 2 + 10 if align else top_k  # candidates per window (the reference's numbers)
        context = item["context"]
        null_score, answers = NO_NULL_SCORE, []
        for feature, output in zip(features, outputs, strict=True):
            window, length = feature.meta, feature.length
            start = masked_softmax(output["start"][:length], window)
            end = masked_softmax(output["end"][:length], window)
            null_score = min(null_score, float(start[0] * end[0]))
            for first, last, score in best_spans(start, end, window, options["max_answer_len"], per_window):
                if align:
                    first, last = widen_to_words(first, last, window)
                char_start, char_end = int(window.offsets[first][0]), int(window.offsets[last][1])
                text = context[char_start:char_end]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += score
                else:
                    answers.append({"score": score, "start": char_start, "end": char_end, "answer": text})
        if options["handle_impossible_answer"]:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers


def _check_int(task: str, name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{task}: {name} must be an integer >= {minimum}, got {value!r}")
