"""The converter's file I/O: bytes copied file to file inside the kernel, memory-mapped reads, and
the buffered copy used where the kernel cannot copy, all giving the bytes of a plain read."""

import errno
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from test_convert import all_tensors, assert_bit_identical

from xlmr_jax.convert import convert_checkpoint
from xlmr_jax.weights import safetensors_io
from xlmr_jax.weights.safetensors_io import (
    PendingTensor,
    SafetensorsFormatError,
    SafetensorsReader,
    write_safetensors,
)


@pytest.fixture
def source(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((37, 11)).astype(np.float32),
               "b": rng.standard_normal((5, 3, 7)).astype(np.float32)}
    path = str(tmp_path / "source.safetensors")
    save_file(tensors, path)
    reader = SafetensorsReader(path)
    yield reader, tensors
    reader.close()


def copied(reader, tmp_path, index) -> np.ndarray:
    """`a[index]` written through a FileRange part, read back with the safetensors library."""
    found = reader.file_range("a", index)
    assert found is not None
    shape = reader.read("a", index).shape
    out = str(tmp_path / "out.safetensors")
    write_safetensors(out, [PendingTensor("a", np.dtype(np.float32), shape, lambda: [lambda: found])])
    return load_file(out)["a"]


def test_file_range_copies_the_bytes_of_the_slice(source, tmp_path):
    reader, tensors = source
    for index in [None, (slice(3, 20),), (slice(36, 37), slice(None))]:
        expected = tensors["a"] if index is None else tensors["a"][index]
        assert np.array_equal(copied(reader, tmp_path, index).view(np.uint8), expected.view(np.uint8))
    # a slice that is not one contiguous run of the file is read, not copied
    assert reader.file_range("a", (slice(0, 5), slice(2, 4))) is None
    assert reader.file_range("b", (slice(None), slice(1, 2))) is None


@pytest.mark.parametrize("error", [errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP])
def test_buffered_copy_where_the_kernel_cannot_copy(source, tmp_path, monkeypatch, error):
    reader, tensors = source

    def refuse(*args):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    monkeypatch.setattr(safetensors_io, "CHUNK_BYTES", 64)  # several buffer fills
    assert np.array_equal(copied(reader, tmp_path, (slice(2, 30),)), tensors["a"][2:30])


def test_other_copy_errors_are_raised(source, tmp_path, monkeypatch):
    reader, _ = source

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", disk_full)
    with pytest.raises(OSError, match="No space left"):
        copied(reader, tmp_path, None)


def test_truncated_source_is_named(tmp_path):
    path = str(tmp_path / "source.safetensors")
    save_file({"a": np.ones((64, 64), np.float32)}, path)
    reader = SafetensorsReader(path)
    found = reader.file_range("a")
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 100)
    out = str(tmp_path / "out.safetensors")
    with pytest.raises(SafetensorsFormatError, match="source.safetensors: file ends before"):
        write_safetensors(out, [PendingTensor("a", np.dtype(np.float32), (64, 64), lambda: [lambda: found])])
    with pytest.raises(SafetensorsFormatError, match="source.safetensors: file ends before"):
        reader.read("a", mapped=True)
    reader.close()


def test_mapped_read_is_a_read_only_view_of_the_same_values(source, monkeypatch):
    reader, tensors = source
    monkeypatch.setattr(safetensors_io, "MAP_MIN_BYTES", 0)
    for index in [None, (slice(4, 9),)]:
        view = reader.read("a", index, mapped=True)
        expected = tensors["a"] if index is None else tensors["a"][index]
        assert not view.flags.writeable
        assert np.array_equal(view.view(np.uint8), expected.view(np.uint8))
    # not contiguous: a plain read, writable
    columns = reader.read("b", (slice(None), slice(1, 2)), mapped=True)
    assert columns.flags.writeable and np.array_equal(columns, tensors["b"][:, 1:2])


@pytest.mark.parametrize("map_min_bytes", [0, 1 << 60])
def test_conversion_copies_in_the_kernel_and_stays_bit_exact(reference_checkpoint, tmp_path, monkeypatch,
                                                             map_min_bytes):
    """The word embeddings (stored unchanged in both layouts) go file to file; every kernel is read
    through a map (map_min_bytes 0) or a copy; the round trip is bit-exact either way."""
    monkeypatch.setattr(safetensors_io, "MAP_MIN_BYTES", map_min_bytes)
    _, path = reference_checkpoint("xlm-roberta", "XLMRobertaForMaskedLM")
    copies = []
    real_copy = os.copy_file_range

    def counting(src, dst, count, offset_src=None, *args):
        copies.append(count)
        return real_copy(src, dst, count, offset_src, *args)

    monkeypatch.setattr(os, "copy_file_range", counting)
    convert_checkpoint(path, tmp_path / "flax", to="flax")
    to_flax = len(copies)
    convert_checkpoint(tmp_path / "flax", tmp_path / "hf", to="pytorch")
    assert to_flax > 0 and len(copies) > to_flax
    assert_bit_identical(all_tensors(path), all_tensors(tmp_path / "hf"))

