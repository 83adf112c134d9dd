"""`xlmr-jax finetune` flags, made from the FinetuneConfig fields so the two never drift apart:
`--learning-rate` is `learning_rate`, a boolean that defaults to True gets `--no-...`.

`xlmr-jax train-mlm` is the same command with `--task masked-lm` fixed, the legacy positional
form `CHECKPOINT TEXT_FILE OUTPUT` (= `--model --train-file --output`), `--steps` for
`--max-steps`, and the old command's defaults (TRAIN_MLM_DEFAULTS); every other flag is finetune's."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from xlmr_jax.finetune.config import TASK_NAMES, FinetuneConfig

HELP = {
    "task": "what to train: " + ", ".join(TASK_NAMES),
    "model": "checkpoint directory or hub id to start from",
    "train_file": "training data: .jsonl, .json (SQuAD nested or JSON lines), .csv or .tsv",
    "output": "run directory: checkpoints/, metrics.jsonl, model/ (HF format) at the end",
    "validation_file": "evaluation data, same format",
    "mesh": 'devices as "data=2,fsdp=4" ("auto": all on data; "none": one device)',
    "buckets": "sequence widths, comma-separated (default: powers of two from 32 up to max-length)",
    "unroll_layers": ("keep the layers in a lax.scan loop instead of straight-line code: a shorter "
                      "compile, slower steps (for deep XL/XXL models)"),
    "columns": "rename a column: --column YOURS=OURS (repeatable), e.g. --column review=sentence1",
}
REQUIRED = ("task", "model", "train_file", "output")

# `xlmr-jax train-mlm` (the legacy masked-LM command, now an alias): defaults that keep its meaning.
# Each line of the text file is one example (no packing; `--pack` packs), 8 rows per global batch,
# and a fixed learning rate of 5e-5 (`--schedule linear` gives finetune's decay).
TRAIN_MLM_DEFAULTS = {"pack": False, "batch_size": 8, "learning_rate": 5e-5, "schedule": "constant"}
TRAIN_MLM_POSITIONALS = (
    ("model", "CHECKPOINT", "checkpoint directory or hub id (finetune's --model)"),
    ("train_file", "TEXT_FILE", "a .txt file, one example per line (or any --train-file format with `text`)"),
    ("output", "OUTPUT", "run directory (finetune's --output): checkpoints/, metrics.jsonl, model/ at the end"),
)


def add_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = (),
                  defaults: dict[str, typing.Any] | None = None,
                  aliases: dict[str, tuple[str, ...]] | None = None) -> None:
    """One flag per FinetuneConfig field. `skip`: fields the caller adds itself (as positionals, or
    fixed with `set_defaults`), under the field name as `dest`; `defaults`: defaults other than the
    dataclass's (a boolean that defaults to False then gets `--flag`, not `--no-flag`); `aliases`:
    more option strings for a field, given before its own."""
    hints = typing.get_type_hints(FinetuneConfig)
    defaults, aliases = defaults or {}, aliases or {}
    for field in dataclasses.fields(FinetuneConfig):
        if field.name in skip:
            continue
        flags = [*aliases.get(field.name, ()), "--" + field.name.replace("_", "-")]
        help_text = HELP.get(field.name)
        default = defaults.get(field.name, None if field.default is dataclasses.MISSING else field.default)
        if field.name == "columns":
            parser.add_argument("--column", dest="columns", action="append", default=[], metavar="YOURS=OURS",
                                help=help_text)
        elif field.name == "buckets":
            parser.add_argument(*flags, dest=field.name, type=_int_list, help=help_text)
        elif hints[field.name] is bool:
            if default:
                parser.add_argument("--no-" + field.name.replace("_", "-"), dest=field.name, action="store_false",
                                    help=help_text)
            else:
                parser.add_argument(*flags, dest=field.name, action="store_true", help=help_text)
        elif field.name == "task":
            parser.add_argument(*flags, dest=field.name, required=True, choices=TASK_NAMES, help=help_text)
        else:
            parser.add_argument(*flags, dest=field.name, type=_scalar_type(hints[field.name]),
                                required=field.name in REQUIRED, default=default,
                                help=help_text or f"(default: {default})")


def add_train_mlm_arguments(parser: argparse.ArgumentParser) -> None:
    """`xlmr-jax train-mlm CHECKPOINT TEXT_FILE OUTPUT [--steps N] [finetune's flags]`: finetune with
    `--task masked-lm` fixed and TRAIN_MLM_DEFAULTS; `config_from_args` reads it as it reads finetune's."""
    for name, metavar, help_text in TRAIN_MLM_POSITIONALS:
        parser.add_argument(name, metavar=metavar, help=help_text)
    add_arguments(parser, skip=("task", *(name for name, _, _ in TRAIN_MLM_POSITIONALS)),
                  defaults=TRAIN_MLM_DEFAULTS, aliases={"max_steps": ("--steps",)})
    parser.set_defaults(task="masked-lm")


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    values = {}
    for field in dataclasses.fields(FinetuneConfig):
        values[field.name] = getattr(args, field.name)
    values["columns"] = _columns(values["columns"])
    if isinstance(values["mesh"], str) and values["mesh"].strip().lower() == "none":
        values["mesh"] = None
    return FinetuneConfig(**values)


def _scalar_type(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    return {int: int, float: float, str: str}.get(base, str)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _columns(pairs: list[str]) -> dict[str, str]:
    columns = {}
    for pair in pairs:
        yours, sep, ours = pair.partition("=")
        if not sep or not yours or not ours:
            raise ValueError(f"--column {pair!r}: expected YOURS=OURS, e.g. --column review=sentence1")
        columns[yours] = ours
    return columns
