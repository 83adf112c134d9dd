"""Directories written all-or-nothing, and never over what the user still needs.

Every directory we write (a converted checkpoint, `save_pretrained`, a training run's output, a new
tokenizer directory) is built in a staging directory beside the destination, `.NAME.partial-*`, and
renamed into place only when complete; an existing destination is moved aside first and removed only
after the new one is in place. While a writer works it holds an exclusive `flock` on its staging
directory, so a later run can tell a partial left by a killed writer (lock free: removed) from one
still being written (lock held: left alone). Locks die with their process, even on kill -9.

Before anything is written, a destination that is a source of the write, holds one or lies inside
one (compared as real paths, so symlinks do not hide it) is refused: replacing it would delete the
data being read.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator

logger = logging.getLogger("xlmr_jax")

PARTIAL_MARK = ".partial-"


class DestinationExistsError(FileExistsError):
    pass


def check_destination(destination: str | os.PathLike, *, sources: Iterable[str | os.PathLike] = (),
                      overwrite: bool = False, what: str = "destination") -> str:
    """The absolute destination path, once it is known to be safe to (re)place: it is none of
    `sources`, does not contain one and is not inside one; it does not exist unless `overwrite`."""
    destination = os.path.abspath(os.fspath(destination))
    real_destination = os.path.realpath(destination)
    for source in sources:
        real_source = os.path.realpath(os.fspath(source))
        if real_destination == real_source:
            raise ValueError(f"{what} {destination} is the source {source} itself; choose another directory")
        if _is_within(real_source, real_destination):
            raise ValueError(f"{what} {destination} contains the source {source}; replacing it would delete "
                             "the source: choose another directory")
        if _is_within(real_destination, real_source) and os.path.isdir(real_source):
            raise ValueError(f"{what} {destination} lies inside the source directory {source}; "
                             "choose a directory outside it")
    if os.path.lexists(destination) and not overwrite:
        raise DestinationExistsError(f"{what} {destination} exists; pass --overwrite (overwrite=True) to replace it")
    if os.path.lexists(destination) and not os.path.isdir(destination):
        raise ValueError(f"{what} {destination} exists and is not a directory; it is not replaced")
    return destination


def _is_within(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory and path != directory


@contextlib.contextmanager
def staged_directory(destination: str | os.PathLike, *, sources: Iterable[str | os.PathLike] = (),
                     overwrite: bool = False, what: str = "destination") -> Iterator[str]:
    """Yield an empty staging directory beside `destination`; when the block ends without an error
    it becomes `destination` (an existing one is replaced only then). On any error or interrupt the
    staging directory is removed and `destination` is as it was."""
    destination = check_destination(destination, sources=sources, overwrite=overwrite, what=what)
    staging, lock = open_staging(destination)
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes it private; what we save is an ordinary directory
        replace_directory(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        os.close(lock)


def open_staging(destination: str, name: str | None = None) -> tuple[str, int]:
    """Create (or, with `name`, open an agreed) staging directory beside `destination` and lock it;
    stale partials of the same destination are removed first. Returns (path, lock descriptor).
    Creating it is also the check that the parent is writable, before any work is done."""
    parent = os.path.dirname(destination)
    try:
        os.makedirs(parent, exist_ok=True)
        remove_stale_partials(destination)
        if name is None:
            staging = tempfile.mkdtemp(prefix=os.path.basename(staging_path(destination, "")), dir=parent)
        else:
            staging = staging_path(destination, name)
            os.makedirs(staging, exist_ok=True)
    except OSError as err:
        raise OSError(err.errno, f"cannot write beside {destination}: {err.strerror}") from None
    lock = os.open(staging, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):  # file systems without locks: go on unlocked
            os.close(lock)
            raise
    return staging, lock


def staging_path(destination: str, name: str) -> str:
    """`.NAME.partial-<name>` beside `destination`: the one naming scheme the cleanup looks for."""
    return os.path.join(os.path.dirname(destination), f".{os.path.basename(destination)}{PARTIAL_MARK}{name}")


def remove_stale_partials(destination: str) -> list[str]:
    """Remove `.NAME.partial-*` directories beside `destination` that no living writer holds (left by
    a writer that was killed). A partial whose lock cannot be tested is left alone."""
    pattern = glob.escape(staging_path(destination, "")) + "*"
    removed = []
    for partial in glob.glob(pattern):
        if not os.path.isdir(partial) or os.path.islink(partial):
            continue
        try:
            handle = os.open(partial, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held by a running writer, or locks unsupported: not ours to judge
        else:
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
            logger.info("removed %s, left by an interrupted write", partial)
        finally:
            os.close(handle)
    return removed


def replace_directory(staging: str, destination: str) -> None:
    """Move the finished staging directory into place; an old destination is removed only afterwards
    (and put back if the move fails)."""
    if not os.path.lexists(destination):
        os.replace(staging, destination)
        return
    retired = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.old-", dir=os.path.dirname(destination))
    os.rmdir(retired)
    os.replace(destination, retired)
    try:
        os.replace(staging, destination)
    except BaseException:
        os.replace(retired, destination)  # put the user's directory back
        raise
    if os.path.islink(retired):  # a link was replaced by the new directory; what it pointed to stays
        os.unlink(retired)
    else:
        shutil.rmtree(retired, ignore_errors=True)
