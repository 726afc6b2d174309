"""Output helpers: files are written whole or not at all."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader never sees a half-written file and a failure leaves no file behind."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _readable(path) -> None:
    """Make the finished file readable by all, as a plain ``open`` would (mkstemp makes it owner-only)."""
    os.chmod(path, 0o644)


def emit(text: str, path: str | os.PathLike | None) -> None:
    """Write ``text`` to ``path`` atomically, or to stdout when ``path`` is None or "-"."""
    if path is None or str(path) == "-":
        sys.stdout.write(text)
        if not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
    else:
        write_text_atomic(path, text if text.endswith("\n") else text + "\n")
