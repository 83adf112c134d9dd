"""`xlmr-jax finetune` flags, made from the FinetuneConfig fields so the two never drift apart:
`--learning-rate` is `learning_rate`, a boolean that defaults to True gets `--no-...`."""

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
    "columns": "rename a column: --column YOURS=OURS (repeatable), e.g. --column review=sentence1",
}
POSITIONAL = ()
REQUIRED = ("task", "model", "train_file", "output")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(FinetuneConfig)
    for field in dataclasses.fields(FinetuneConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = HELP.get(field.name)
        if field.name == "columns":
            parser.add_argument("--column", dest="columns", action="append", default=[], metavar="YOURS=OURS",
                                help=help_text)
        elif field.name == "buckets":
            parser.add_argument(flag, type=_int_list, help=help_text)
        elif hints[field.name] is bool:
            if field.default:
                parser.add_argument("--no-" + field.name.replace("_", "-"), dest=field.name, action="store_false",
                                    help=help_text)
            else:
                parser.add_argument(flag, action="store_true", help=help_text)
        else:
            kind = _scalar_type(hints[field.name])
            default = None if field.default is dataclasses.MISSING else field.default
            if field.name == "task":
                parser.add_argument(flag, required=True, choices=TASK_NAMES, help=help_text)
            else:
                parser.add_argument(flag, type=kind, required=field.name in REQUIRED, default=default,
                                    help=help_text or f"(default: {default})")


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
