"""`xlmr-jax demo`: what the trained demo model predicts, then every model of the library on its
checkpoint, next to the reference.

First, through the pipelines: `fill-mask` on one sentence per language (the top predictions for the
masked word), and `sentence-embeddings` (mean pooling) on related and unrelated sentence pairs, each
compared with the reference (`transformers.pipeline("fill-mask")`; the mean of its encoder's last
hidden states) when it is installed. Then, for each of the seven models, the reference builds the
model from the checkpoint and saves it; we convert that PyTorch checkpoint to our Flax format, load
the Flax files, run both on the same padded batch and print max |diff| at non-pad positions, then
convert the Flax files back and check them bit for bit against the reference's. Without
`transformers`, the checkpoint itself is converted and our models run alone.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import tempfile
import unicodedata

import jax
import numpy as np

import xlmr_jax
from xlmr_jax.convert import convert_checkpoint
from xlmr_jax.demo.examples import FILL_MASK, PARITY_SENTENCES, SIMILARITY_PAIRS
from xlmr_jax.demo.word_guesses import is_word

# |ours - reference| <= PARITY_TOLERANCE * max(1, |reference|) at every compared element: 1e-5 as
# the parity tests hold random-weight models to, scaled where a value exceeds 1 (the trained
# model's logits reach ~16, and the demo's random heads (std 0.3) on its hidden states make
# outputs of that size; float32 rounds such values at ~1e-6 whatever computes them).
PARITY_TOLERANCE = 1e-5

# (our class, config changes the head needs, output fields to compare)
MODELS = [
    ("XLMRobertaModel", {}, ("last_hidden_state", "pooler_output")),
    ("XLMRobertaForMaskedLM", {}, ("logits",)),
    ("XLMRobertaForCausalLM", {"is_decoder": True}, ("logits",)),
    ("XLMRobertaForSequenceClassification", {"num_labels": 3}, ("logits",)),
    ("XLMRobertaForMultipleChoice", {}, ("logits",)),
    ("XLMRobertaForTokenClassification", {"num_labels": 5}, ("logits",)),
    ("XLMRobertaForQuestionAnswering", {"num_labels": 2}, ("start_logits", "end_logits")),
]


@dataclasses.dataclass
class Row:
    model: str
    output: str
    shape: tuple[int, ...]
    max_abs_diff: float | None
    round_trip_bit_exact: bool | None
    max_scaled_diff: float | None = None  # max of |diff| / max(1, |reference|)

    @property
    def ok(self) -> bool:
        parity = self.max_scaled_diff is None or self.max_scaled_diff <= PARITY_TOLERANCE
        return parity and self.round_trip_bit_exact is not False


def encode(checkpoint: str, sentences: list[str]):
    from xlmr_jax.tokenizer import XLMRobertaTokenizer

    tokenizer = XLMRobertaTokenizer.from_pretrained(checkpoint)
    batch = tokenizer(sentences, padding=True)
    return tokenizer, np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])


def model_inputs(arch: str, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    if arch == "XLMRobertaForMultipleChoice":  # the sentences as choices of one question
        return {"input_ids": ids[None], "attention_mask": mask[None]}
    return {"input_ids": ids, "attention_mask": mask}


def compare_position_mask(arch: str, output: str, mask: np.ndarray) -> np.ndarray | None:
    if arch in ("XLMRobertaForSequenceClassification", "XLMRobertaForMultipleChoice") or output == "pooler_output":
        return None
    return mask.astype(bool)


def reference_checkpoint(arch: str, changes: dict, checkpoint: str, directory: str):
    """The reference builds the head model from the checkpoint (new heads from its own init) and
    saves it: the PyTorch checkpoint we then load, exactly as a user's fine-tuned model."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # its load report would list the new heads again
    transformers.utils.logging.disable_progress_bar()
    model, info = getattr(transformers, arch).from_pretrained(
        checkpoint, **changes, attn_implementation="eager", output_loading_info=True
    )
    # New heads start at std 0.02 with zero biases; randomise them fully so that the comparison
    # exercises every head parameter (a swapped bias would show). Kernels at std 1/sqrt(fan-in)
    # keep a head's outputs at the size of the hidden states it reads (a fixed std would scale
    # them, and float32's rounding of them, by sqrt(hidden) for no gain); vectors at std 0.3.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in info["missing_keys"]:
                scale = param.shape[-1] ** -0.5 if param.ndim >= 2 else 0.3
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    return model


def run_demo(checkpoint: str, sentences: list[str]) -> list[Row]:
    reference = has_reference()
    tokenizer, ids, mask = encode(checkpoint, sentences)
    print(f"checkpoint: {checkpoint}")
    print(f"devices: {jax.devices()}")
    for sentence, row in zip(sentences, ids, strict=True):
        print(f"  {sentence!r} -> {tokenizer.convert_ids_to_tokens([int(i) for i in row if i != 1])}")
    if reference:
        check_tokenizer(checkpoint, sentences, ids)
    rows = []
    for arch, changes, fields in MODELS:
        inputs = model_inputs(arch, ids, mask)
        with tempfile.TemporaryDirectory() as tmp:
            hf_dir, flax_dir, back_dir = (os.path.join(tmp, name) for name in ("hf", "flax", "hf-again"))
            expected = None
            if reference:
                import torch

                ref = reference_checkpoint(arch, changes, checkpoint, hf_dir)
                with torch.no_grad():
                    expected = ref(**{k: torch.tensor(v) for k, v in inputs.items()})
                convert_checkpoint(hf_dir, flax_dir, to="flax")
            else:
                convert_checkpoint(checkpoint, flax_dir, to="flax", architecture=arch, **changes)
                hf_dir = None
            # the Flax checkpoint is what we run; converting it back must give the HF files again
            convert_checkpoint(flax_dir, back_dir, to="pytorch")
            round_trip = None if hf_dir is None else same_tensors(hf_dir, back_dir)
            ours = getattr(xlmr_jax, arch).from_pretrained(flax_dir)
        got = xlmr_jax.jit_forward(ours)(**inputs)
        for field in fields:
            value = np.asarray(getattr(got, field))
            diff = scaled = None
            if expected is not None:
                reference_value = getattr(expected, field).detach().numpy()
                where = compare_position_mask(arch, field, mask)
                delta = np.abs(value - reference_value)
                relative = delta / np.maximum(1.0, np.abs(reference_value))
                if where is not None:
                    delta, relative = delta[where], relative[where]
                diff, scaled = float(delta.max()), float(relative.max())
            rows.append(Row(arch, field, value.shape, diff, round_trip, scaled))
    return rows


def same_tensors(dir_a: str, dir_b: str) -> bool:
    """Every tensor of two checkpoint directories equal bit for bit (names, dtypes, bytes)."""
    from safetensors.numpy import load_file

    def tensors(directory):
        out = {}
        for name in sorted(os.listdir(directory)):
            if name.endswith(".safetensors"):
                out.update(load_file(os.path.join(directory, name)))
        return out

    a, b = tensors(dir_a), tensors(dir_b)
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a
    )


def check_tokenizer(checkpoint: str, sentences: list[str], ids: np.ndarray) -> None:
    import transformers

    reference = transformers.XLMRobertaTokenizer.from_pretrained(checkpoint)
    expected = reference(sentences, padding=True, return_tensors="np")["input_ids"]
    same = np.array_equal(expected, ids)
    print(f"tokenizer ids equal to the reference's: {same}")
    if not same:
        raise SystemExit("tokenizer parity failed")


def print_table(rows: list[Row]) -> None:
    print()
    print(f"{'model (HF -> Flax -> loaded)':<38} {'output':<18} {'shape':<16} {'max |diff|':>10}"
          f"  {'/ max(1,|ref|)':>14}  {'Flax -> HF bit-exact':>20}")
    for row in rows:
        if row.max_abs_diff is None:
            diff = "(transformers not installed)"
        else:
            diff = f"{row.max_abs_diff:>10.2e}  {row.max_scaled_diff:>14.2e}"
        exact = "-" if row.round_trip_bit_exact is None else ("yes" if row.round_trip_bit_exact else "NO")
        flag = "" if row.ok else "  FAIL"
        print(f"{row.model:<38} {row.output:<18} {row.shape!s:<16} {diff:>26}  {exact:>20}{flag}")


def padded(text: str, width: int) -> str:
    """`text` left-aligned in `width` terminal columns (CJK characters take two)."""
    columns = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - columns)


def quiet_reference() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def has_reference() -> bool:
    return bool(importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch"))


def show_fill_mask(checkpoint: str) -> bool:
    """Top-5 predictions for each FILL_MASK sentence; False when the reference's pipeline differs."""
    fill = xlmr_jax.pipeline("fill-mask", checkpoint, top_k=5)
    texts = [text for _, text, _ in FILL_MASK]
    ours = fill(texts)
    print(f"fill-mask (pipeline, top 5; * marks the word that was masked): checkpoint {checkpoint}")
    right = wordlike = 0
    for (language, text, word), predictions in zip(FILL_MASK, ours, strict=True):
        words = [p["token_str"].strip() for p in predictions]
        right += word in words
        wordlike += is_word(fill.tokenizer.convert_ids_to_tokens(predictions[0]["token"]), language)
        shown = ", ".join(f"{w or repr(p['token_str'])}{'*' if w == word else ''} {p['score']:.2f}"
                          for w, p in zip(words, predictions, strict=True))
        print(f"  {language}  {padded(text, 38)} {shown}")
    print(f"  the masked word is among the top 5 in {right} of {len(FILL_MASK)} languages; "
          f"the best guess is a word of the sentence's script in {wordlike}")
    if not has_reference():
        return True
    import transformers

    quiet_reference()
    reference = transformers.pipeline("fill-mask", model=checkpoint, top_k=5)(texts)
    same_tokens = all([p["token"] for p in a] == [p["token"] for p in b] for a, b in zip(ours, reference, strict=True))
    diff = max(abs(p["score"] - q["score"]) for a, b in zip(ours, reference, strict=True) for p, q in zip(a, b))
    ok = same_tokens and diff <= PARITY_TOLERANCE
    print(f"  vs transformers.pipeline('fill-mask'): same top-5 tokens: {same_tokens}, "
          f"max |score diff| {diff:.2e}{'' if ok else '  FAIL'}")
    return ok


def show_similarity(checkpoint: str) -> bool:
    """Cosine similarity of SIMILARITY_PAIRS' mean-pooled embeddings; False when the reference's differ."""
    embed = xlmr_jax.pipeline("sentence-embeddings", checkpoint)
    texts = list(dict.fromkeys(text for pair in SIMILARITY_PAIRS for text in pair[:2]))
    vectors = dict(zip(texts, embed(texts), strict=True))
    print("\nsentence-embeddings (pipeline, mean pooling): cosine similarity")
    for first, second, related in SIMILARITY_PAIRS:
        a, b = vectors[first], vectors[second]
        cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        print(f"  {'related  ' if related else 'unrelated'} {cosine:6.3f}  {first!r} / {second!r}")
    if not has_reference():
        return True
    reference = reference_mean_pooled(checkpoint, texts)
    diff = float(np.abs(np.stack([vectors[t] for t in texts]) - reference).max())
    ok = diff <= PARITY_TOLERANCE
    print(f"  vs transformers (mean of XLMRobertaModel's last hidden states over real tokens): "
          f"max |diff| {diff:.2e}{'' if ok else '  FAIL'}")
    return ok


def reference_mean_pooled(checkpoint: str, texts: list[str]) -> np.ndarray:
    import torch
    import transformers

    quiet_reference()
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    model = transformers.XLMRobertaModel.from_pretrained(checkpoint, add_pooling_layer=False).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].to(states.dtype)
    return ((states * mask).sum(1) / mask.sum(1)).numpy()


def main(checkpoint: str | None = None, sentences: list[str] | None = None) -> int:
    jax.config.update("jax_default_matmul_precision", "highest")
    checkpoint = checkpoint or xlmr_jax.demo.DEMO_CHECKPOINT
    if not os.path.isdir(checkpoint):
        raise SystemExit(f"checkpoint directory not found: {checkpoint}")
    pipelines_ok = show_fill_mask(checkpoint)
    pipelines_ok = show_similarity(checkpoint) and pipelines_ok
    print()
    rows = run_demo(checkpoint, sentences or PARITY_SENTENCES)
    print_table(rows)
    failed = [row for row in rows if not row.ok]
    if failed or not pipelines_ok:
        print(f"\nparity FAILED for {len(failed)} output(s) (tolerance {PARITY_TOLERANCE:g} x max(1, |reference|))"
              + ("" if pipelines_ok else " and for the pipelines (see above)"))
        return 1
    compared = sum(row.max_abs_diff is not None for row in rows)
    if compared:
        print(f"\nparity OK: {compared} outputs of 7 models within {PARITY_TOLERANCE:g} x max(1, |value|) of "
              "transformers (fp32), "
              "each model converted HF -> Flax, loaded from the Flax files, and converted back bit-exact")
    return 0
