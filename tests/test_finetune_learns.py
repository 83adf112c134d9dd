"""Fine-tuning the shipped demo checkpoint learns each task: on small synthetic tasks whose answer
is a rule (a label decided by which words occur, tags on the city names, the answer span after
"in", the ending that repeats the context's keyword) it reaches accuracy >= 0.95 (classification,
multiple choice), entity F1 >= 0.9 and SQuAD F1 >= 0.9 on held-out examples."""

import pytest
from finetune_helpers import choice_records, ner_records, qa_records, sentiment_records, write_jsonl

from xlmr_jax.demo import DEMO_CHECKPOINT
from xlmr_jax.finetune import FinetuneConfig, finetune

CASES = {
    # task: (records, metric, bar, steps, extra config). Text classification, NER and QA at lr 1e-3
    # reached 0.98-1.0 (SQuAD F1 99.5) at these counts on the first shipped model and pass on today's.
    "text-classification": (sentiment_records, "accuracy", 0.95, 30, {}),
    "token-classification": (ner_records, "f1", 0.9, 40, {}),
    "question-answering": (qa_records, "f1", 90.0, 60, {}),
    # Today's model was pretrained one message per row, so it never saw a `</s></s>` pair before
    # fine-tuning. At lr 1e-3 its multiple-choice loss sits at ln 4 from step 10 (gradient norm
    # 0.03) and ends at chance; at 2e-4 over 120 steps fine-tuning seeds 0-3 end at 1.0 / 0.98 /
    # 1.0 / 0.98 (3e-4: down to 0.97).
    "multiple-choice": (choice_records, "accuracy", 0.95, 120,
                        {"max_length": 32, "buckets": (32,), "learning_rate": 2e-4}),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_fine_tuning_the_shipped_checkpoint_learns(task, tmp_path):
    make, metric, bar, steps, extra = CASES[task]
    settings = dict(max_length=64, buckets=(32, 64), batch_size=16, max_steps=steps, learning_rate=1e-3,
                    warmup_ratio=0.1, dropout=0.0, mesh=None, progress=False, log_every=steps, seed=0)
    settings.update(extra)
    summary = finetune(FinetuneConfig(
        task=task, model=DEMO_CHECKPOINT, train_file=write_jsonl(tmp_path / "train.jsonl", make(256, 0)),
        validation_file=write_jsonl(tmp_path / "dev.jsonl", make(64, 1)), output=str(tmp_path / "out"),
        **settings,
    ))
    assert summary["final_eval"][metric] >= bar, summary["final_eval"]
