"""Nothing the user had is lost: a destination that is, holds or lies in the source is refused
(through symlinks too), outputs are replaced only once complete, interrupted writes leave no
half-written directory and their leftovers are cleaned by the next run, and train-mlm (finetune
--task masked-lm) checks everything before writing and keeps what finetune promises to keep."""

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

from xlmr_jax.cli import main as cli_main
from xlmr_jax.demo import TINY_CHECKPOINT
from xlmr_jax.demo.corpus import SENTENCES


def snapshot(directory) -> dict[str, bytes]:
    """Every file under `directory` with its bytes: what must survive untouched."""
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, directory)] = fh.read()
    return out


def hidden_entries(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith("."))


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "parent" / "src"
    shutil.copytree(TINY_CHECKPOINT, path)
    return path


def convert(src, dst, *more) -> int:
    return cli_main(["convert", str(src), str(dst), "--to", "flax", "--no-progress", *more])


# -- convert ----------------------------------------------------------------------------------------

def test_convert_refuses_a_destination_that_holds_the_source(source, capsys):
    before = snapshot(source)
    assert convert(source, source.parent, "--overwrite") == 2
    assert "contains the source" in capsys.readouterr().err
    assert snapshot(source) == before


def test_convert_refuses_the_source_through_a_symlink(source, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(source, target_is_directory=True)
    before = snapshot(source)
    assert convert(link, source, "--overwrite") == 2
    assert convert(source, link, "--overwrite") == 2
    assert capsys.readouterr().err.count("is the source") == 2
    assert snapshot(source) == before and link.is_symlink()


def test_convert_refuses_a_destination_inside_the_source(source, capsys):
    before = snapshot(source)
    assert convert(source, source / "flax") == 2
    assert "lies inside the source" in capsys.readouterr().err
    assert snapshot(source) == before


def test_killed_writer_leaves_a_partial_that_the_next_run_removes(source, tmp_path):
    """A writer killed with SIGKILL (no cleanup runs) leaves `.out.partial-*`; the next write to the
    same destination removes it, while a partial whose writer is alive is left alone."""
    dest = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from xlmr_jax.staging import open_staging
        staging, _ = open_staging({str(dest)!r})
        open(os.path.join(staging, "flax_model.safetensors"), "wb").write(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    (left,) = hidden_entries(tmp_path)
    assert left.startswith(".out.partial-")
    live = tempfile.mkdtemp(prefix=".out.partial-", dir=tmp_path)  # a writer at work: its lock is held
    lock = os.open(live, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        assert convert(source, dest) == 0
        assert hidden_entries(tmp_path) == [os.path.basename(live)]
    finally:
        os.close(lock)
        shutil.rmtree(live)
    assert sorted(os.listdir(dest)) == ["config.json", "flax_model.safetensors", "sentencepiece.bpe.model",
                                        "special_tokens_map.json", "tokenizer_config.json"]


def test_overwrite_replaces_a_symlinked_destination_without_touching_its_target(source, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    assert convert(source, link, "--overwrite") == 0
    assert not link.is_symlink() and (link / "flax_model.safetensors").is_file()
    assert (target / "precious.txt").read_text() == "keep me"
    assert hidden_entries(tmp_path) == []


# -- tokenizer --------------------------------------------------------------------------------------

def test_tokenizer_save_to_a_new_directory_is_all_or_nothing(tmp_path, monkeypatch):
    from xlmr_jax.tokenization import files
    from xlmr_jax.tokenizer import XLMRobertaTokenizer

    tokenizer = XLMRobertaTokenizer.from_pretrained(TINY_CHECKPOINT)
    real_write = files.write_json_atomic

    def disk_full(path, *args, **kwargs):
        if str(path).endswith("special_tokens_map.json"):
            raise OSError(28, "No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(files, "write_json_atomic", disk_full)
    with pytest.raises(OSError, match="No space left"):
        tokenizer.save_pretrained(tmp_path / "tok")
    assert os.listdir(tmp_path) == []  # neither the directory nor a staging copy is left
    monkeypatch.setattr(files, "write_json_atomic", real_write)
    written = tokenizer.save_pretrained(tmp_path / "tok")
    assert sorted(os.path.basename(p) for p in written) == sorted(os.listdir(tmp_path / "tok"))


# -- train-mlm (the alias of finetune --task masked-lm) ------------------------------------------
# What finetune promises for OUTPUT (xlmr_jax/finetune/run_directory.py): every input and the output's
# place are checked before anything is written, so a failed check leaves an earlier OUTPUT as it was,
# even with --overwrite. Once they all check out, --overwrite removes the earlier run and OUTPUT is the
# live run directory: an interrupted run leaves its checkpoints there for --resume, not the earlier
# run. Only model/ is staged and renamed into place when complete: a failed export leaves no partial
# model/ and an earlier model/ as it was.

@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def earlier_output(tmp_path):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "model" / "precious.txt").write_text("an earlier run")
    return out


def train(checkpoint, text, out, *more) -> int:
    return cli_main(["train-mlm", str(checkpoint), str(text), str(out), "--steps", "2", "--max-length", "16",
                     "--mesh", "none", "--no-progress", *more])


def disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("problem", ["missing checkpoint", "empty text", "batch size 0", "max length 2"])
def test_train_mlm_checks_everything_before_touching_the_output(problem, tmp_path, text_file, earlier_output,
                                                                capsys):
    checkpoint, more = TINY_CHECKPOINT, ["--overwrite"]
    if problem == "missing checkpoint":
        checkpoint = tmp_path / "no-such-model"
    elif problem == "empty text":
        text_file.write_text("\n \n", encoding="utf-8")
    else:
        more += {"batch size 0": ["--batch-size", "0"], "max length 2": ["--max-length", "2"]}[problem]
    before = snapshot(earlier_output)
    assert train(checkpoint, text_file, earlier_output, *more) == 2
    err = capsys.readouterr().err
    assert err.startswith("xlmr-jax train-mlm: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert snapshot(earlier_output) == before and hidden_entries(tmp_path) == []


def test_train_mlm_refuses_an_output_that_holds_its_checkpoint(tmp_path, text_file, capsys):
    shutil.copytree(TINY_CHECKPOINT, tmp_path / "cont" / "model")
    before = snapshot(tmp_path / "cont")
    assert train(tmp_path / "cont" / "model", text_file, tmp_path / "cont", "--overwrite") == 2
    assert "contains the source" in capsys.readouterr().err
    assert snapshot(tmp_path / "cont") == before


def test_train_mlm_learns_before_loading_the_model_that_the_output_cannot_be_written(tmp_path, text_file, capsys,
                                                                                      monkeypatch):
    import xlmr_jax

    class NotToBeLoaded:
        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            raise AssertionError("the model was loaded before the output's place was checked")

    monkeypatch.setattr(xlmr_jax, "XLMRobertaForMaskedLM", NotToBeLoaded)
    (tmp_path / "a-file").write_text("not a directory")  # root writes anywhere; this fails for root too
    assert train(TINY_CHECKPOINT, text_file, tmp_path / "a-file" / "run") == 2
    assert f"{tmp_path / 'a-file'} is not a directory" in capsys.readouterr().err
    assert (tmp_path / "a-file").read_text() == "not a directory"


def test_train_mlm_interrupted_leaves_its_run_to_resume(tmp_path, text_file, earlier_output, monkeypatch, capsys):
    from xlmr_jax.training import steps

    real_make = steps.make_train_step

    def make_interrupted(*args, **kwargs):  # Ctrl-C during the second step
        state, step = real_make(*args, **kwargs)
        calls = []

        def interrupted(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return step(*a, **k)

        return state, interrupted

    monkeypatch.setattr(steps, "make_train_step", make_interrupted)
    assert train(TINY_CHECKPOINT, text_file, earlier_output, "--overwrite") == 130
    assert "the same command with --resume continues it" in capsys.readouterr().err
    # --overwrite replaced the earlier run once every input checked out; what is left is this run's
    assert sorted(os.listdir(earlier_output)) == ["checkpoints", "metrics.jsonl", "run_config.json"]
    assert hidden_entries(tmp_path) == [] and hidden_entries(earlier_output) == []
    monkeypatch.setattr(steps, "make_train_step", real_make)
    capsys.readouterr()
    assert train(TINY_CHECKPOINT, text_file, earlier_output, "--resume") == 0
    assert (earlier_output / "model" / "model.safetensors").is_file()
    assert not (earlier_output / "model" / "precious.txt").exists()


def test_train_mlm_full_disk_during_export_leaves_no_partial_model(tmp_path, text_file, earlier_output,
                                                                   monkeypatch):
    from xlmr_jax.tokenization import files

    real_write = files.write_atomic
    monkeypatch.setattr(files, "write_atomic", disk_full)  # the tokenizer's files, after the weights
    assert train(TINY_CHECKPOINT, text_file, earlier_output, "--overwrite") == 1
    assert sorted(os.listdir(earlier_output)) == ["checkpoints", "metrics.jsonl", "run_config.json"]
    assert (earlier_output / "checkpoints" / "2").is_dir()  # the trained state, saved before the export
    assert hidden_entries(tmp_path) == [] and hidden_entries(earlier_output) == []
    monkeypatch.setattr(files, "write_atomic", real_write)
    assert train(TINY_CHECKPOINT, text_file, earlier_output, "--resume") == 0  # exports step 2, trains nothing
    exported = snapshot(earlier_output / "model")
    assert {"config.json", "model.safetensors", "sentencepiece.bpe.model"} <= set(exported)
    monkeypatch.setattr(files, "write_atomic", disk_full)  # a second export fails: the first stays as it was
    assert train(TINY_CHECKPOINT, text_file, earlier_output, "--resume") == 1
    assert snapshot(earlier_output / "model") == exported and hidden_entries(earlier_output) == []
