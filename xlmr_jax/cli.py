"""The `xlmr-jax` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xlmr-jax", description="XLM-RoBERTa in JAX/Flax NNX.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run every model on a small checkpoint and report parity with transformers"
    )
    demo.add_argument("--checkpoint", help="an HF XLM-R checkpoint directory (default: the trained mini model shipped)")
    demo.add_argument("--text", action="append", help="a sentence to run (repeat for several)")

    convert = commands.add_parser(
        "convert", help="convert a checkpoint: HF PyTorch safetensors <-> Flax safetensors, streamed"
    )
    convert.add_argument("source", help="checkpoint directory (HF PyTorch or our Flax format) or hub id")
    convert.add_argument("destination", help="directory to write (refused if it exists, unless --overwrite)")
    convert.add_argument("--to", required=True, choices=["flax", "pytorch"], help="the format to write")
    convert.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                         help="cast the weights (default: keep each tensor's dtype; bit-exact)")
    convert.add_argument("--architecture", help="model class, e.g. XLMRobertaForSequenceClassification "
                         "(default: the config's `architectures`)")
    convert.add_argument("--num-labels", type=int, help="labels of a new classification head")
    convert.add_argument("--seed", type=int, default=0, help="seed of a newly initialised head")
    convert.add_argument("--max-shard-size", default="5GB", help="shard the weights above this size")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    convert.add_argument("--allow-pickle", action="store_true",
                         help="read pytorch_model.bin (a pickle; loaded with weights_only=True)")
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")

    run = commands.add_parser(
        "run", help="run a pipeline (fill-mask, text-classification, ...) on inputs from stdin or a file"
    )
    run.add_argument("--task", required=True, help="the task, e.g. fill-mask (an unknown one lists them)")
    run.add_argument("--model", required=True, help="checkpoint directory or hub id")
    run.add_argument("--tokenizer", help="tokenizer directory (default: the model's)")
    run.add_argument("--input", help="one input per line (default: stdin); .jsonl: JSON objects")
    run.add_argument("--output", help="JSON lines (default: stdout); a .npy path takes sentence embeddings")
    run.add_argument("--jsonl", action="store_true", help="inputs are JSON objects, one per line")
    run.add_argument("--top-k", type=int, help="results per input (tasks that rank)")
    run.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="a task option, VALUE read as JSON (else a string), e.g. --option targets='[\"a\"]'")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype (params stay float32)")
    run.add_argument("--mesh", help='split batches over devices, e.g. "data=8"')
    run.add_argument("--quantization", choices=["int8", "int4", "nf4"],
                     help="weight-only quantisation of the matmul kernels, applied while loading")
    run.add_argument("--compilation-cache", help="directory for JAX's persistent compilation cache")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (shown for --input files)")

    finetune = commands.add_parser(
        "finetune", help="fine-tune for a task (classification, NER, QA, multiple choice, masked/causal LM)"
    )
    from xlmr_jax.finetune.cli_args import add_arguments as add_finetune_arguments

    add_finetune_arguments(finetune)
    _add_distributed_arguments(finetune)

    train = commands.add_parser(
        "train-mlm", help="alias of `finetune --task masked-lm`: CHECKPOINT TEXT_FILE OUTPUT --steps N, one "
        "example per line", description="`xlmr-jax finetune --task masked-lm --model CHECKPOINT --train-file "
        "TEXT_FILE --output OUTPUT --max-steps N` with the old train-mlm defaults: no packing (each line is one "
        "example; --pack packs), --batch-size 8, a constant --learning-rate 5e-5. Every other flag, the output "
        "directory and its rules are finetune's.",
    )
    from xlmr_jax.finetune.cli_args import add_train_mlm_arguments

    add_train_mlm_arguments(train)
    _add_distributed_arguments(train)
    return parser


def _add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("several processes (else from XLMR_JAX_COORDINATOR, "
                                      "XLMR_JAX_NUM_PROCESSES, XLMR_JAX_PROCESS_ID)")
    group.add_argument("--coordinator", help="host:port of process 0")
    group.add_argument("--num-processes", type=int)
    group.add_argument("--process-id", type=int)
    group.add_argument("--auto-distributed", action="store_true",
                       help="let JAX find the processes itself (Cloud TPU VMs, SLURM)")
    group.add_argument("--distributed-timeout", type=int, default=300, help="seconds to wait for the coordinator")


# XLMR_JAX_KEEP_HOST_MEMORY=0: the training commands leave glibc's malloc as it is (the tests set
# it: they run the commands inside long-lived pytest processes).
KEEP_HOST_MEMORY = "XLMR_JAX_KEEP_HOST_MEMORY"

# A user's mistake (a bad argument, a missing file, an output that exists): one line, exit 2, as
# argparse does for bad flags. Anything else the machine did (a full disk): one line, exit 1.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # train-mlm is finetune's alias: its arguments make the same FinetuneConfig (task masked-lm).
    commands = {"demo": _demo, "convert": _convert, "run": _run, "train-mlm": _finetune, "finetune": _finetune}
    if args.command in ("finetune", "train-mlm") and os.environ.get(KEEP_HOST_MEMORY, "1") != "0":
        from xlmr_jax import host_memory

        # Before JAX starts its threads: a training step's buffers are then reused, not faulted in
        # again every step (host_memory.py: 11-14% of a CPU step's time on base sizes).
        host_memory.keep_freed_host_memory()
    try:
        return commands[args.command](args)
    except USER_ERRORS as err:
        print(f"xlmr-jax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as err:
        print(f"xlmr-jax {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.command in ("finetune", "train-mlm"):
            # A run directory is live (that is what makes --resume possible): say what it holds now.
            said = (f"interrupted; {args.output} holds the run so far (its last checkpoint): "
                    "the same command with --resume continues it")
        else:
            said = "interrupted; existing outputs were left as they were"
        print(f"xlmr-jax {args.command}: {said}", file=sys.stderr)
        return 130


def _demo(args: argparse.Namespace) -> int:
    from xlmr_jax.demo.run import main as demo_main

    return demo_main(args.checkpoint, args.text)


def _run(args: argparse.Namespace) -> int:
    import json

    from xlmr_jax.run import run_task

    options = {}
    for option in args.option:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {option!r}: expected KEY=VALUE")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    if args.top_k is not None:
        options["top_k"] = args.top_k
    run_task(args.task, args.model, input_path=args.input, output_path=args.output, tokenizer=args.tokenizer,
             jsonl=True if args.jsonl else None, dtype=args.dtype, mesh=args.mesh, batch_size=args.batch_size,
             progress=not args.no_progress, compilation_cache=args.compilation_cache,
             quantization=args.quantization, **options)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    import json

    from xlmr_jax import distributed
    from xlmr_jax.finetune import finetune
    from xlmr_jax.finetune.cli_args import config_from_args

    logging.getLogger("xlmr_jax").setLevel(logging.INFO)
    config = config_from_args(args)
    config.check()  # before connecting processes: a typo costs no cluster time
    distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                           auto=args.auto_distributed, timeout_s=args.distributed_timeout)
    summary = finetune(config)
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from xlmr_jax.convert import convert_checkpoint, format_summary

    changes = {} if args.num_labels is None else {"num_labels": args.num_labels}
    summary = convert_checkpoint(
        args.source, args.destination, to=args.to, dtype=args.dtype, architecture=args.architecture,
        overwrite=args.overwrite, max_shard_size=args.max_shard_size, allow_pickle=args.allow_pickle,
        seed=args.seed, progress=not args.no_progress, **changes,
    )
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
