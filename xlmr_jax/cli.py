"""The `xlmr-jax` command."""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xlmr-jax", description="XLM-RoBERTa in JAX/Flax NNX.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run every model on a small checkpoint and report parity with transformers"
    )
    demo.add_argument("--checkpoint", help="an HF XLM-R checkpoint directory (default: the tiny one shipped)")
    demo.add_argument("--text", action="append", help="a sentence to run (repeat for several)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from xlmr_jax.demo.run import main as demo_main

        return demo_main(args.checkpoint, args.text)
    return 2


if __name__ == "__main__":
    sys.exit(main())
