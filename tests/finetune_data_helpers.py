"""The reference example scripts' preprocessing, reproduced on a `transformers` tokenizer, for the
fine-tuning data tests: run_ner.py's `tokenize_and_align_labels` and run_qa.py's
`prepare_train_features` (transformers v4.4x examples/pytorch)."""

from __future__ import annotations

import json
from pathlib import Path


def run_ner_features(ref_tok, records: list[dict], label_list: list[str], max_length: int,
                     label_all_tokens: bool) -> tuple[list[list[int]], list[list[int]]]:
    """(input_ids, labels) per sentence, as run_ner.py makes them (no padding)."""
    label_to_id = {label: i for i, label in enumerate(label_list)}
    b_to_i_label = []
    for idx, label in enumerate(label_list):
        if label.startswith("B-") and label.replace("B-", "I-") in label_list:
            b_to_i_label.append(label_list.index(label.replace("B-", "I-")))
        else:
            b_to_i_label.append(idx)
    tokenized = ref_tok([r["tokens"] for r in records], truncation=True, max_length=max_length,
                        is_split_into_words=True)
    all_labels = []
    for i, record in enumerate(records):
        label = record["ner_tags"]
        previous_word_idx = None
        label_ids = []
        for word_idx in tokenized.word_ids(batch_index=i):
            if word_idx is None:
                label_ids.append(-100)
            elif word_idx != previous_word_idx:
                label_ids.append(label_to_id[label[word_idx]])
            elif label_all_tokens:
                label_ids.append(b_to_i_label[label_to_id[label[word_idx]]])
            else:
                label_ids.append(-100)
            previous_word_idx = word_idx
        all_labels.append(label_ids)
    return tokenized["input_ids"], all_labels


def run_qa_features(ref_tok, records: list[dict], max_length: int, doc_stride: int) -> list[tuple[list[int], int, int]]:
    """(input_ids, start_position, end_position) per window, as run_qa.py's prepare_train_features
    makes them (XLM-R pads on the right; no padding here)."""
    questions = [r["question"].lstrip() for r in records]
    tokenized = ref_tok(questions, [r["context"] for r in records], truncation="only_second", max_length=max_length,
                        stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    out = []
    for i, offsets in enumerate(tokenized["offset_mapping"]):
        input_ids = tokenized["input_ids"][i]
        cls_index = input_ids.index(ref_tok.cls_token_id)
        sequence_ids = tokenized.sequence_ids(i)
        answers = records[tokenized["overflow_to_sample_mapping"][i]]["answers"]
        if len(answers["answer_start"]) == 0:
            out.append((input_ids, cls_index, cls_index))
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start_index = 0
        while sequence_ids[token_start_index] != 1:
            token_start_index += 1
        token_end_index = len(input_ids) - 1
        while sequence_ids[token_end_index] != 1:
            token_end_index -= 1
        if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
            out.append((input_ids, cls_index, cls_index))
            continue
        while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
            token_start_index += 1
        start = token_start_index - 1
        while offsets[token_end_index][1] >= end_char:
            token_end_index -= 1
        out.append((input_ids, start, token_end_index + 1))
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path
