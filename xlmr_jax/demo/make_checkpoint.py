"""Rebuild the tiny demo checkpoint that ships in `xlmr_jax/demo/tiny-xlm-roberta/`.

    python -m xlmr_jax.demo.make_checkpoint [OUTPUT_DIR]

Needs torch and transformers (the checkpoint is written by the reference itself, as an HF
`XLMRobertaForMaskedLM` with `save_pretrained`). The sentencepiece model is trained on
`corpus.SENTENCES`; every weight is random (seeded), LayerNorm and biases included, so that the
demo's parity check exercises every parameter. The weights are untrained: the demo shows
conversion and parity, not predictions.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile

ASSET_DIR = os.path.join(os.path.dirname(__file__), "tiny-xlm-roberta")
SEED = 20261125


def train_sentencepiece(directory: str) -> str:
    import sentencepiece as spm

    from xlmr_jax.demo.corpus import SENTENCES

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 20), model_writer=model, model_type="unigram", vocab_size=300,
        normalization_rule_name="nmt_nfkc", character_coverage=1.0, hard_vocab_limit=False,
        num_threads=1, minloglevel=2,
    )
    path = os.path.join(directory, "sentencepiece.bpe.model")
    with open(path, "wb") as fh:
        fh.write(model.getvalue())
    return path


def build(directory: str) -> None:
    import sentencepiece as spm
    import torch
    import transformers

    from xlmr_jax.tokenizer import XLMRobertaTokenizer

    spm_path = train_sentencepiece(directory)
    vocab_size = spm.SentencePieceProcessor(model_file=spm_path).get_piece_size() + 2  # + <pad>, <mask>
    config = transformers.XLMRobertaConfig(
        vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=130, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(SEED)
    model = transformers.XLMRobertaForMaskedLM(config).eval()
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            scale = param.shape[1] ** -0.5 if param.ndim == 2 and "embeddings" not in name else 0.3
            param.copy_((1.0 if "LayerNorm.weight" in name or "layer_norm.weight" in name else 0.0) + scale * noise)
    model.save_pretrained(directory, safe_serialization=True)
    # Our tokenizer writes tokenizer_config.json with the released model's special tokens
    # (<mask> strips the space before it); transformers loads it as an XLMRobertaTokenizer.
    XLMRobertaTokenizer(spm_path, model_max_length=128).save_pretrained(directory)
    os.chmod(directory, 0o755)  # mkdtemp made it private
    for name in os.listdir(directory):
        os.chmod(os.path.join(directory, name), 0o644)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    output = argv[0] if argv else ASSET_DIR
    staging = tempfile.mkdtemp(prefix="tiny-xlm-roberta-", dir=os.path.dirname(os.path.abspath(output)))
    try:
        build(staging)
        if os.path.exists(output):
            shutil.rmtree(output)
        os.replace(staging, output)  # all or nothing: no half-written asset
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    print(f"wrote {output}: {sorted(os.listdir(output))}")


if __name__ == "__main__":
    main()
