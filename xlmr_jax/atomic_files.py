"""Files written all-or-nothing: a temporary file beside the target, then a rename."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: Path, content: bytes) -> None:
    """Write via a temporary file in the same directory and rename, so readers never see half a file."""
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp_file:
            temp_file.write(content)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        # mkstemp creates the file private (0600); what we save is an ordinary shared file.
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, content: dict[str, Any], sort_keys: bool = False) -> None:
    text = json.dumps(content, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n"
    write_atomic(Path(path), text.encode("utf-8"))
