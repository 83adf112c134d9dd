"""The shipped demo model (`mini-xlm-roberta`, trained by `python -m xlmr_jax.demo.train_model`): it
beats the most-frequent-token baseline at top-5 and a unigram model's likelihood on held-out text by
a margin, the figures it ships with are the ones it gives when loaded, and the reference loads it
with the same logits."""

import json
import os

import numpy as np
import pytest
import torch
import transformers

import xlmr_jax
from xlmr_jax.demo import DEMO_CHECKPOINT
from xlmr_jax.demo.examples import FILL_MASK, PARITY_SENTENCES
from xlmr_jax.demo.heldout import heldout_accuracy, line_rows, masked_rows, packed_rows, read_heldout
from xlmr_jax.demo.word_guesses import SCRIPTS, is_whole_word, is_word, masked_messages, word_guesses

# The shipped model (5,000 steps of one message per row) is 16.6 points above the most-frequent-token
# baseline at top-1 and 28.7 at top-5 on the held-out lines, its masked tokens cost 4.29 nats against
# a unigram model's 7.45 (2.6-3.6 nats better in every language), and its best guess for one word
# masked in a single message is a word of the line's script 66% of the time (heldout.json, the
# README). The bounds sit well below those and well above the first demo model (packed rows, a bag
# of words: level with the baseline at top-1, +5.0 at top-5, 1.6 nats, 9.5% words), so a loading
# regression or a recipe that stops learning word order fails them. A rebuild lands within a point
# or so of the shipped figures (test_a_rebuild_lands_within_the_stated_margin).
TOP1_MARGIN = 0.10
TOP5_MARGIN = 0.20
NLL_MARGIN = 2.0  # nats per mask below the unigram model, overall
LANGUAGE_NLL_MARGIN = 1.5  # and in each language
WORD_TOP1_MIN = 0.5  # one word masked in one message: the best guess is a word of the line's script


@pytest.fixture(scope="module")
def shipped():
    with open(os.path.join(DEMO_CHECKPOINT, "heldout.json"), encoding="utf-8") as fh:
        recorded = json.load(fh)
    return recorded, xlmr_jax.XLMRobertaForMaskedLM.from_pretrained(DEMO_CHECKPOINT), \
        xlmr_jax.XLMRobertaTokenizer.from_pretrained(DEMO_CHECKPOINT)


def test_shipped_model_beats_the_most_frequent_token_on_heldout_text(shipped):
    recorded, model, tokenizer = shipped
    heldout = read_heldout(os.path.join(DEMO_CHECKPOINT, "heldout.tsv"))
    assert len(heldout) >= 1000 and len({language for language, _ in heldout}) == 16
    got = heldout_accuracy(model, tokenizer, heldout, recorded["baseline_token_ids"],
                           packed=recorded.get("packed", True))  # the first demo model was trained packed
    assert got["masks"] == recorded["masks"] >= 2000
    assert got["top1"] >= got["baseline_top1"] + TOP1_MARGIN, got
    assert got["top5"] >= got["baseline_top5"] + TOP5_MARGIN, got
    # the unigram model needs the training text, which is not shipped: its figure is the recorded one
    assert got["nll"] <= recorded["baseline_nll"] - NLL_MARGIN, (got["nll"], recorded["baseline_nll"])
    for language, scores in got["per_language"].items():
        baseline_nll = recorded["per_language"][language]["baseline_nll"]
        assert scores["nll"] <= baseline_nll - LANGUAGE_NLL_MARGIN, (language, scores["nll"], baseline_nll)
    # what training measured is what the shipped files give (up to summation order on other CPUs)
    for key in ("top1", "top5", "baseline_top1", "baseline_top5"):
        assert abs(got[key] - recorded[key]) <= 0.002, (key, got[key], recorded[key])
    assert abs(got["nll"] - recorded["nll"]) <= 1e-3, (got["nll"], recorded["nll"])


def test_single_message_word_guesses_are_the_recorded_ones(shipped):
    """The README's figure for the demo's own situation (one word masked in one held-out message,
    nothing packed around it) is what the shipped files give; every masked piece is a whole word of
    its line's script, and the same pieces are masked on every run."""
    recorded, model, tokenizer = shipped
    heldout = read_heldout(os.path.join(DEMO_CHECKPOINT, "heldout.tsv"))
    examples = masked_messages(tokenizer, heldout)
    assert {language for language, *_ in examples} == set(SCRIPTS)
    for language, masked, position, target in examples:
        assert masked[position] == tokenizer.mask_token_id and masked[0] == tokenizer.bos_token_id
        pieces = tokenizer.convert_ids_to_tokens([int(i) for i in masked[:-1]])
        pieces[position] = tokenizer.convert_ids_to_tokens(target)
        assert is_whole_word(pieces, position, language), (language, pieces, position)
    again = masked_messages(tokenizer, heldout)
    assert all(a[2] == b[2] and a[3] == b[3] for a, b in zip(examples, again))
    got = word_guesses(model, tokenizer, heldout)
    want = recorded["single_messages"]
    assert got["masks"] == want["masks"] == len(examples) >= 1000
    assert got["word_top1"] >= WORD_TOP1_MIN, got
    for key in ("top1", "top5", "word_top1"):
        assert abs(got[key] - want[key]) <= 0.002, (key, got[key], want[key])


@pytest.mark.parametrize("piece, language, expected", [
    ("\u2581valid", "en", True), ("valid", "en", False),  # a word's inside, not a word
    ("\u2581", "en", False), (".", "en", False), ("\u2581s", "en", False), ("\u2581a1", "en", False),
    ("\u2581\u0412\u0432\u0435\u0434", "en", False),  # Cyrillic letters in an English line
    ("\u2581\u0412\u0432\u0435\u0434", "ru", True),
    ("\u7684", "zh", True), ("\u2581\u7684", "zh", True),  # one Han character is a word piece, spaced or not
    ("\u2581\u092e\u093e\u0928\u094d\u092f", "hi", True),  # vowel sign and virama are marks
    ("\u2581\u0930", "hi", False),
])
def test_what_counts_as_a_word_piece(piece, language, expected):
    assert is_word(piece, language) is expected


def test_whole_words_are_followed_by_the_next_word_or_punctuation():
    pieces = ["\u2581Enter", "\u2581a", "\u2581valid", "\u2581integ", "er", "."]
    assert [is_whole_word(pieces, p, "en") for p in range(len(pieces))] == [True, False, True, False, False, False]
    assert is_whole_word(["\u2581\u6574\u6570", "\u3092"], 0, "ja")  # no spaces: any piece of letters


# How far a rebuild may land from the shipped model (README): measured once with another seed
# (rebuild_heldout.json: top-1 -0.49, top-5 -0.19 points, NLL +0.041 nats, single-message words
# -1.1 points; per language at most 7.1 points of top-5 (hi, 127 masks) and 0.14 nats (ja)),
# stated with room for other hardware's rounding.
REBUILD_MARGIN = {"top1": 0.01, "top5": 0.01, "nll": 0.08}
REBUILD_LANGUAGE_MARGIN = {"top5": 0.10, "nll": 0.25}
REBUILD_WORD_MARGIN = 0.03


def test_a_rebuild_lands_within_the_stated_margin(shipped):
    recorded, _, _ = shipped
    with open(os.path.join(DEMO_CHECKPOINT, "rebuild_heldout.json"), encoding="utf-8") as fh:
        rebuild = json.load(fh)
    assert rebuild["steps"] == recorded["steps"] and rebuild["seed"] != recorded["seed"]
    assert rebuild["masks"] == recorded["masks"] and rebuild["baseline_nll"] == recorded["baseline_nll"]
    for key, margin in REBUILD_MARGIN.items():
        assert abs(rebuild[key] - recorded[key]) <= margin, (key, rebuild[key], recorded[key])
    for language, scores in rebuild["per_language"].items():
        for key, margin in REBUILD_LANGUAGE_MARGIN.items():
            shipped_value = recorded["per_language"][language][key]
            assert abs(scores[key] - shipped_value) <= margin, (language, key, scores[key], shipped_value)
    rebuilt, shipped_words = rebuild["single_messages"], recorded["single_messages"]
    assert rebuilt["masks"] == shipped_words["masks"]
    assert abs(rebuilt["word_top1"] - shipped_words["word_top1"]) <= REBUILD_WORD_MARGIN, (rebuilt, shipped_words)


def test_heldout_rows_are_one_language_each_and_masks_deterministic(shipped):
    _, _, tokenizer = shipped
    heldout = read_heldout(os.path.join(DEMO_CHECKPOINT, "heldout.tsv"))
    rows = packed_rows(tokenizer, heldout)
    languages = [language for language, _ in rows]
    assert languages == sorted(languages, key=[language for language, _ in heldout].index)  # grouped
    assert all(ids[0] == tokenizer.bos_token_id and len(ids) <= 128 for _, ids in rows)
    tokens = sum(len(ids) - 1 for _, ids in rows)
    assert tokens == sum(len(ids) + 1 for ids in tokenizer([t for _, t in heldout], add_special_tokens=False,
                                                           return_tensors=None)["input_ids"])  # nothing lost
    first, again = masked_rows(tokenizer, [ids for _, ids in rows]), masked_rows(tokenizer, [ids for _, ids in rows])
    for (ids, positions, targets), (ids2, positions2, _) in zip(first, again, strict=True):
        assert np.array_equal(ids, ids2) and np.array_equal(positions, positions2) and len(positions) >= 1
        assert (ids[positions] == tokenizer.mask_token_id).all()
        assert not np.isin(targets, [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id]).any()


def test_heldout_line_rows_are_each_line_alone(shipped):
    _, _, tokenizer = shipped
    heldout = read_heldout(os.path.join(DEMO_CHECKPOINT, "heldout.tsv"))[:50]
    rows = line_rows(tokenizer, heldout)
    assert [language for language, _ in rows] == [language for language, _ in heldout]
    for (_, text), (_, ids) in zip(heldout, rows):
        body = tokenizer(text, add_special_tokens=False, return_tensors=None)["input_ids"]
        assert ids.tolist() == [tokenizer.bos_token_id, *body, tokenizer.eos_token_id]


def test_shipped_checkpoint_loads_in_transformers_with_the_same_logits(shipped):
    _, model, tokenizer = shipped
    texts = PARITY_SENTENCES + [text for _, text, _ in FILL_MASK[::4]]
    batch = tokenizer(texts, padding=True)
    ids, mask = np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
    reference_tokens = transformers.AutoTokenizer.from_pretrained(DEMO_CHECKPOINT)(texts, padding=True,
                                                                                 return_tensors="np")
    assert np.array_equal(reference_tokens["input_ids"], ids)
    reference = transformers.XLMRobertaForMaskedLM.from_pretrained(DEMO_CHECKPOINT, attn_implementation="eager")
    with torch.no_grad():
        expected = reference.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    got = np.asarray(xlmr_jax.jit_forward(model)(input_ids=ids, attention_mask=mask).logits)
    real = mask.astype(bool)
    # Trained logits reach ~16 (random-weight ones stay near 1): 1e-5 of each logit's own size,
    # float32 rounding over the same sums taken in another order
    assert (np.abs(got - expected)[real] <= 1e-5 * np.maximum(1.0, np.abs(expected[real]))).all()


def test_shipped_checkpoint_size_and_files():
    names = set(os.listdir(DEMO_CHECKPOINT))
    assert {"config.json", "model.safetensors", "sentencepiece.bpe.model", "tokenizer_config.json",
            "special_tokens_map.json", "training_log.jsonl", "heldout.json", "heldout.tsv",
            "corpus_stats.json", "rebuild_heldout.json"} <= names
    assert sum(os.path.getsize(os.path.join(DEMO_CHECKPOINT, n)) for n in names) <= 25_000_000
    with open(os.path.join(DEMO_CHECKPOINT, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    assert config["vocab_size"] >= 5000 and config["num_hidden_layers"] >= 4
    with open(os.path.join(DEMO_CHECKPOINT, "training_log.jsonl"), encoding="utf-8") as fh:
        log = [json.loads(line) for line in fh]
    evals = [record["eval"] for record in log if "eval" in record]
    first_loss = next(record["loss"] for record in log if "loss" in record)  # ~ln(vocab) at the start
    assert len(evals) >= 5 and evals[-1]["loss"] < evals[0]["loss"] < first_loss - 2.0  # it learned, as logged


def test_fill_mask_examples_are_held_out_and_mask_one_piece(shipped):
    """Each example sentence is a held-out line of its language (so no translation of the message
    was trained on: a message is held out in every language at once) and its masked word is one
    piece, which the model can name in one prediction."""
    _, _, tokenizer = shipped
    heldout = set(read_heldout(os.path.join(DEMO_CHECKPOINT, "heldout.tsv")))
    for language, text, word in FILL_MASK:
        assert (language, text.replace("<mask>", word)) in heldout, (language, text)
        pieces = tokenizer.tokenize(text.replace("<mask>", word))
        assert word in pieces or "\u2581" + word in pieces, (language, word, pieces)


def test_the_demos_best_guesses_are_words_of_each_sentences_language():
    """The issue's bar for the demo: its predictions are real words of the right language for most
    masks (the shipped model: 11 of 16; the first demo model: 0)."""
    fill = xlmr_jax.pipeline("fill-mask", DEMO_CHECKPOINT, top_k=5)
    predictions = fill([text for _, text, _ in FILL_MASK])
    best = [fill.tokenizer.convert_ids_to_tokens(guesses[0]["token"]) for guesses in predictions]
    words = [piece for (language, _, _), piece in zip(FILL_MASK, best, strict=True) if is_word(piece, language)]
    assert len(words) > len(FILL_MASK) // 2, best


def _build_outputs(root, text):
    """The files `package` gathers, each holding `text`."""
    model_dir, run_dir, corpus = (root / name for name in ("model", "run", "corpus"))
    for directory, names in ((model_dir, ["model.safetensors", "config.json"]), (run_dir, ["metrics.jsonl"]),
                             (corpus, ["heldout.tsv", "stats.json"])):
        directory.mkdir(exist_ok=True)
        for name in names:
            (directory / name).write_text(text)
    return str(model_dir), str(run_dir), str(corpus)


def test_packaging_replaces_the_model_whole_keeping_the_rebuild_figures(tmp_path, monkeypatch):
    from xlmr_jax.demo import train_model

    output = tmp_path / "mini"
    train_model.package(*_build_outputs(tmp_path, "old"), {"top1": 0.1}, str(output))
    assert (output / "model.safetensors").read_text() == "old"
    assert sorted(os.listdir(output)) == ["config.json", "corpus_stats.json", "heldout.json", "heldout.tsv",
                                          "model.safetensors", "training_log.jsonl"]
    (output / "rebuild_heldout.json").write_text('{"top1": 0.09}')  # a second seed's figures, added by hand

    real_replace = os.replace

    def staged_rename_fails(source, target):
        staged = os.path.basename(str(source)).startswith("mini-xlm-roberta-") and not str(source).endswith("-replaced")
        if staged and str(target) == str(output):
            raise OSError("disk full")
        return real_replace(source, target)

    monkeypatch.setattr(train_model.os, "replace", staged_rename_fails)
    with pytest.raises(OSError, match="disk full"):
        train_model.package(*_build_outputs(tmp_path, "new"), {"top1": 0.2}, str(output))
    assert (output / "model.safetensors").read_text() == "old"  # the user's model is still there
    assert sorted(os.listdir(tmp_path)) == ["corpus", "mini", "model", "run"]  # no staging left behind

    monkeypatch.setattr(train_model.os, "replace", real_replace)
    train_model.package(*_build_outputs(tmp_path, "new"), {"top1": 0.2}, str(output))
    assert (output / "model.safetensors").read_text() == "new"
    assert json.loads((output / "heldout.json").read_text()) == {"top1": 0.2}
    assert json.loads((output / "rebuild_heldout.json").read_text()) == {"top1": 0.09}  # carried over
    assert sorted(os.listdir(tmp_path)) == ["corpus", "mini", "model", "run"]
