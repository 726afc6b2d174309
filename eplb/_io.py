"""Output helpers: files are written whole or not at all."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path in ``path``'s folder to write to; on success it is renamed onto
    ``path`` (readable by all, as a plain ``open`` would make it), on failure removed, so a reader
    never sees a half-written file and a failure leaves no file behind."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(2, f"cannot write {path}: folder {folder} does not exist; create it first", str(folder))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def emit(text: str, path: str | os.PathLike | None) -> None:
    """Write ``text`` to ``path`` atomically, or to stdout when ``path`` is None or "-"."""
    if path is None or str(path) == "-":
        sys.stdout.write(text)
        if not text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
    else:
        write_text_atomic(path, text if text.endswith("\n") else text + "\n")
