"""safetensors files read with positioned reads and written as a stream.

Why not `safetensors.safe_open` / `save_file` alone: `safe_open` reads through a memory map, and
every page it touches stays resident (and counted in RSS) for as long as the file is open, so a
streaming conversion would look like a whole-checkpoint load; `save_file` needs every tensor in
memory at once. The format is simple (8-byte little-endian header length, a JSON header, then
the raw bytes), so reads here are `os.pread` of exactly the bytes asked for, and writes emit the
header and then each tensor's bytes chunk by chunk. `safe_open` still validates every file we
open, and the tests read what we write with the `safetensors` library itself.

For the converter, two ways that skip a copy: a read may return a view of a memory map of just the
bytes asked for (`mapped=True`, unmapped when the view is freed), and bytes stored as they will be
written go file to file inside the kernel (`FileRange`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import errno
import json
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# What one read or write moves at most, for row-streamed tensors. Not larger: glibc serves blocks over
# 32 MiB with a fresh mmap each time, so every 64 MiB block paid its page faults and zeroing again
# (measured: 2-3x the kernel time of 16 MiB blocks, which the allocator reuses, converting 2.24 GB).
CHUNK_BYTES = 16 * 1024 * 1024


class SafetensorsFormatError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    stop: int

    @property
    def nbytes(self) -> int:
        return self.stop - self.start


class SafetensorsReader:
    """One safetensors file: header parsed once, tensors (or leading-axis slices) read on demand."""

    def __init__(self, path: str):
        self.path = path
        try:
            with safe_open(path, framework="numpy"):
                pass  # the library's own validation of header, offsets and file size
        except (SafetensorError, OSError, ValueError) as err:
            raise SafetensorsFormatError(f"{path}: not a readable safetensors file ({err})") from None
        self._fd = os.open(path, os.O_RDONLY)
        header_size = struct.unpack("<Q", os.pread(self._fd, 8, 0))[0]
        header = json.loads(os.pread(self._fd, header_size, 8))
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        base = 8 + header_size
        self.entries: dict[str, TensorEntry] = {}
        for name, info in header.items():
            if info["dtype"] not in DTYPES:
                raise SafetensorsFormatError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
            start, stop = info["data_offsets"]
            self.entries[name] = TensorEntry(name, DTYPES[info["dtype"]], tuple(info["shape"]),
                                             base + start, base + stop)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # Bytes read from disk by every reader of this process (diagnostics: the multi-host tests use it
    # to check that a process reads only the slices its own devices hold).
    bytes_read_total = 0

    def _read_bytes(self, start: int, count: int) -> bytes:
        data = os.pread(self._fd, count, start)
        if len(data) != count:
            raise SafetensorsFormatError(f"{self.path}: file ends before byte {start + count} (truncated?)")
        SafetensorsReader.bytes_read_total += count
        return data

    def _read_into(self, view: memoryview, start: int) -> None:
        got = os.preadv(self._fd, [view], start)
        if got != len(view):
            raise SafetensorsFormatError(f"{self.path}: file ends before byte {start + len(view)} (truncated?)")
        SafetensorsReader.bytes_read_total += got

    def _runs(self, entry: TensorEntry, index: tuple[slice, ...] | None) -> tuple[tuple[int, ...], int, list[int]]:
        """(shape of `tensor[index]`, bytes per contiguous run, absolute file offset of each run)."""
        index = tuple(index or ()) + (slice(None),) * (len(entry.shape) - len(tuple(index or ())))
        ranges = []
        for axis, (sl, size) in enumerate(zip(index, entry.shape, strict=True)):
            start, stop, step = sl.indices(size)
            if step != 1:
                raise ValueError(f"{self.path}: {entry.name}: axis {axis}: strided reads are not supported ({sl})")
            ranges.append(range(start, max(start, stop)))
        out_shape = tuple(len(r) for r in ranges)
        if 0 in out_shape:
            return out_shape, 0, []
        # Axes after the last partially-read one are whole: each run is contiguous over them.
        partial = [axis for axis, (r, size) in enumerate(zip(ranges, entry.shape, strict=True)) if len(r) != size]
        split = partial[-1] if partial else 0
        itemsize = entry.dtype.itemsize
        strides = np.cumprod((1, *entry.shape[::-1][:-1]))[::-1] * itemsize  # bytes per step of each axis
        run_bytes = int(np.prod(out_shape[split:], dtype=np.int64)) * itemsize
        run_start = int(sum(r.start * stride for r, stride in zip(ranges[split:], strides[split:], strict=True)))
        if split == 0:
            offsets = np.zeros(1, np.int64)
        else:
            grids = np.meshgrid(*[np.asarray(r, np.int64) for r in ranges[:split]], indexing="ij")
            offsets = sum(g.reshape(-1) * int(stride) for g, stride in zip(grids, strides[:split], strict=True))
        return out_shape, run_bytes, [entry.start + run_start + offset for offset in offsets.tolist()]

    def read(self, name: str, index: tuple[slice, ...] | None = None, mapped: bool = False) -> np.ndarray:
        """The tensor, or `tensor[index]` for a tuple of unit-step slices, reading from disk only the
        bytes the slice covers: one read when the slice is contiguous in the file, else one read per
        contiguous run (e.g. per row when only some columns are wanted).

        `mapped=True` (a contiguous slice): a read-only view of a memory map of just those bytes
        instead of a copy, for a caller that transposes or writes it at once and then drops it (the
        converter): the bytes go from the page cache to their destination without a copy in between,
        and the map is unmapped when the view is freed, so resident memory stays one part's worth."""
        entry = self.entries[name]
        if not entry.shape:
            return np.frombuffer(self._read_bytes(entry.start, entry.nbytes), entry.dtype).reshape(())
        out_shape, run_bytes, offsets = self._runs(entry, index)
        if mapped and len(offsets) == 1 and run_bytes >= MAP_MIN_BYTES:
            return self._mapped(entry.dtype, out_shape, offsets[0], run_bytes)
        out = np.empty(out_shape, entry.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        for i, offset in enumerate(offsets):
            self._read_into(view[i * run_bytes:(i + 1) * run_bytes], offset)
        return out

    def _mapped(self, dtype: np.dtype, shape: tuple[int, ...], start: int, nbytes: int) -> np.ndarray:
        if os.fstat(self._fd).st_size < start + nbytes:  # a map past the end would crash on access (SIGBUS)
            raise SafetensorsFormatError(f"{self.path}: file ends before byte {start + nbytes} (truncated?)")
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        window = mmap.mmap(self._fd, start + nbytes - aligned, prot=mmap.PROT_READ, offset=aligned)
        SafetensorsReader.bytes_read_total += nbytes
        # The array keeps the map alive; the map is unmapped when the last view of it is freed.
        return np.frombuffer(window, dtype, count=nbytes // dtype.itemsize, offset=start - aligned).reshape(shape)

    def file_range(self, name: str, index: tuple[slice, ...] | None = None) -> FileRange | None:
        """`tensor[index]` as a range of this file's bytes when it is one contiguous run (else None),
        for a writer that copies it unchanged (see `FileRange`)."""
        entry = self.entries[name]
        if not entry.shape:
            return FileRange(self, entry.start, entry.nbytes)
        _, run_bytes, offsets = self._runs(entry, index)
        if len(offsets) != 1:
            return None
        return FileRange(self, offsets[0], run_bytes)


# Smaller slices are read with a copy: a map costs two system calls and a page fault per 4 KiB page.
MAP_MIN_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class FileRange:
    """Bytes of a safetensors file that a writer copies unchanged (a tensor, or a contiguous slice of
    one, in the dtype it is stored in): `write_safetensors` copies them file to file inside the kernel
    (`os.copy_file_range`), so they never pass through this process's memory."""

    reader: SafetensorsReader
    start: int
    nbytes: int

    def copy_to(self, out_fd: int) -> None:
        """Append the bytes at `out_fd`'s position."""
        source, offset, remaining = self.reader._fd, self.start, self.nbytes
        if hasattr(os, "copy_file_range"):
            try:
                while remaining:
                    copied = os.copy_file_range(source, out_fd, remaining, offset)
                    if copied == 0:
                        raise SafetensorsFormatError(f"{self.reader.path}: file ends before byte {offset + remaining} "
                                                     "(truncated?)")
                    SafetensorsReader.bytes_read_total += copied
                    offset += copied
                    remaining -= copied
                return
            except OSError as err:
                # A kernel or pair of file systems that cannot copy between these files (EXDEV across
                # mounts on some kernels, ENOSYS/EOPNOTSUPP/EINVAL elsewhere): the same bytes go through
                # a buffer instead. Any other error (disk full, I/O) is the caller's to see.
                if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
        buffer = memoryview(bytearray(min(remaining, CHUNK_BYTES)))
        while remaining:
            part = buffer[:min(remaining, len(buffer))]
            self.reader._read_into(part, offset)  # counts the bytes it reads
            _write_all(out_fd, part)
            offset += len(part)
            remaining -= len(part)


def _write_all(fd: int, data) -> None:
    """`os.write` until every byte is out (a single call may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


# -- writing -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PendingTensor:
    """A tensor to write: its header facts now, its bytes later, part by part, in row-major order.

    `parts()` lists zero-argument functions, each producing the next block of the tensor (an array, or
    a `FileRange` of a source file to copy unchanged); they are independent of each other, so a writer
    may compute several at once (see `PartPrefetcher`)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    parts: Callable[[], Sequence[Callable[[], np.ndarray | FileRange]]]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def chunks(self) -> Iterator[np.ndarray | FileRange]:
        """The blocks one after the other, each computed when asked for."""
        for part in self.parts():
            yield part()


def write_safetensors(path: str, tensors: list[PendingTensor], metadata: dict[str, str] | None = None,
                      on_tensor: Callable[[PendingTensor], None] | None = None) -> int:
    """Write `tensors` to `path` (the caller renames a temp path into place); returns bytes written.
    Every FLUSH_EVERY_BYTES a background `fdatasync` hands what was written to the disk, so the disk
    works while the next parts are computed rather than all at the final `fsync`."""
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {"dtype": DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                               "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # keep the data 8-byte aligned, as the library does
    # Unbuffered: array parts are large, and `FileRange` parts are copied at the descriptor's position.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # as open(path, "wb"): the umask decides
    try:
        with _BackgroundFlush(fd) as flusher:
            _write_all(fd, struct.pack("<Q", len(encoded)) + encoded)
            unflushed = 0
            for tensor in tensors:
                written = 0
                for chunk in tensor.chunks():
                    if isinstance(chunk, FileRange):
                        chunk.copy_to(fd)
                        written += chunk.nbytes
                        continue
                    chunk = np.ascontiguousarray(chunk, dtype=tensor.dtype)
                    _write_all(fd, chunk.tobytes() if chunk.ndim == 0 else chunk.reshape(-1).view(np.uint8))
                    written += chunk.nbytes
                    del chunk  # free it before the producer builds the next one
                if written != tensor.nbytes:
                    raise RuntimeError(f"{path}: tensor {tensor.name!r} produced {written} bytes, expected {tensor.nbytes}")
                if on_tensor is not None:
                    on_tensor(tensor)
                unflushed += written
                if unflushed >= FLUSH_EVERY_BYTES:
                    flusher.request()
                    unflushed = 0
            os.fsync(fd)
    finally:
        os.close(fd)
    return 8 + len(encoded) + offset


FLUSH_EVERY_BYTES = 256 * 1024 * 1024


class _BackgroundFlush(contextlib.AbstractContextManager):
    """A thread, started when first asked, that runs `fdatasync` on request (it releases the GIL)."""

    def __init__(self, fd: int):
        self._fd = fd
        self._wanted = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="safetensors-flush", daemon=True)
            self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closing:
                return
            try:
                os.fdatasync(self._fd)
            except OSError:
                return  # the final fsync reports what went wrong

    def __exit__(self, *exc) -> bool:
        if self._thread is not None:
            self._closing = True
            self._wanted.set()
            self._thread.join()
        return False


class PartPrefetcher(contextlib.AbstractContextManager):
    """The parts of `tensors` computed ahead of the writer by `workers` threads (reading, transposing
    and casting release the GIL in `os.pread` and numpy), at most `workers + 1` parts ahead.

    `tensors()` gives stand-ins for the tensors whose parts hand back the prefetched results; the
    writer must consume them in order, each once (as `write_safetensors` does over the shards of one
    checkpoint). Not for parts that must run in order on one thread (a multi-process gather)."""

    def __init__(self, tensors: list[PendingTensor], workers: int):
        self._source = tensors
        self._jobs = (part for tensor in tensors for part in tensor.parts())
        self._ahead = workers + 1
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="checkpoint-part")
        self._queue: collections.deque[concurrent.futures.Future] = collections.deque()

    def tensors(self) -> list[PendingTensor]:
        return [PendingTensor(t.name, t.dtype, t.shape, lambda t=t: [self._take] * len(t.parts()))
                for t in self._source]

    def _fill(self) -> None:
        while len(self._queue) < self._ahead:
            part = next(self._jobs, None)
            if part is None:
                return
            self._queue.append(self._pool.submit(part))

    def _take(self) -> np.ndarray:
        self._fill()
        future = self._queue.popleft()
        self._fill()  # the next parts start while this one is written
        return future.result()

    def __exit__(self, *exc) -> bool:
        for future in self._queue:
            future.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        return False
