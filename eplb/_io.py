"""Output files: one writer for everything the command line writes.

:func:`write_file` writes a regular file (or a new path) whole or not at all: the bytes go to a
hidden temporary file in the same folder, are flushed to disk, and the temporary file is renamed
onto the target. A symbolic link is followed (its target is replaced, the link stays a link), an
existing file keeps its mode (and, for root, its owner), and a new file gets the mode ``open()``
would give it (0666 less the umask). Anything else that is not a folder (a FIFO, ``/dev/null``,
``/dev/stdout``) is opened and written straight through, since it cannot be replaced.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
import sys

from eplb.errors import EplbError

__all__ = ["write_file", "emit"]

_HINTS = {
    errno.EACCES: "check the permissions or write somewhere else",
    errno.EPERM: "check the permissions or write somewhere else",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.ENOSPC: "the disk is full; free some space or write somewhere else",
    errno.EDQUOT: "the disk quota is exceeded; free some space or write somewhere else",
    errno.ENOENT: "create the folder first",
    errno.ENOTDIR: "a part of the path is not a folder; fix the path",
    errno.ELOOP: "a symbolic link loops; fix the link",
    errno.ENAMETOOLONG: "use a shorter name",
    errno.ENXIO: "nothing can be written there (a socket, or a device without a reader); choose a file",
}


def _error(path: str, exc: OSError) -> OSError:
    """``exc`` restated to name the user's ``path`` (not a temporary file) and a fix."""
    reason = (exc.strerror or str(exc) or type(exc).__name__).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    hint = _HINTS.get(exc.errno, "choose another path")
    return type(exc)(exc.errno, f"cannot write {path}: {reason}; {hint}")


def write_file(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` whole or not at all.

    A regular file or a new path is replaced atomically (temporary file, fsync, rename) with the
    old file's mode, or ``0666 & ~umask`` for a new one; a symbolic link is written through to its
    target; a FIFO or device is written straight through. Raises EplbError for a folder and an
    OSError naming ``path`` when the write fails, leaving any old file as it was and no temporary
    file behind.
    """
    shown = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8", "backslashreplace")  # a file name that is not UTF-8 shows as \udcff
    try:
        st = os.stat(shown)  # follows links; None for a new path or a dangling link
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _error(shown, exc) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise EplbError(f"{shown} is a folder; give a file name to write to")
    try:
        if st is not None and not stat.S_ISREG(st.st_mode):
            with open(shown, "wb") as fh:  # a FIFO or device: it cannot be replaced, only written to
                fh.write(data)
        elif st is not None and _names_open_file(shown):
            with open(shown, "ab") as fh:  # /dev/stdout redirected to a file: add to what the shell opened
                fh.write(data)
        else:
            target = os.path.realpath(shown)  # a link's target is replaced; the link stays a link
            folder = os.path.dirname(target)
            if not os.path.isdir(folder):
                named = folder if os.path.islink(shown) else (os.path.dirname(shown) or ".")
                raise FileNotFoundError(errno.ENOENT, f"folder {named} does not exist")
            _replace(target, data, st)
    except OSError as exc:
        raise _error(shown, exc) from None


def _names_open_file(path: str) -> bool:
    """Whether ``path`` or a link it leads through is a file descriptor of this process
    (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``): already open, so not to be replaced."""
    p = os.path.abspath(path)
    for _ in range(40):
        if p.startswith(("/proc/", "/dev/fd/")):
            return True
        if not os.path.islink(p):
            return False
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    return False


def _replace(target: str, data: bytes, st: os.stat_result | None) -> None:
    folder, name = os.path.split(target)
    short = os.fsdecode(os.fsencode(name)[:200])  # the temporary name must fit where the file's own name fits
    tmp = os.path.join(folder, f".{short}.{secrets.token_hex(4)}.tmp")
    # like open(): a new file gets 0666 less the umask (and any default ACL of the folder)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            if st is not None:
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                if hasattr(os, "geteuid") and os.geteuid() == 0:
                    os.fchown(fd, st.st_uid, st.st_gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def emit(text: str, path: str | os.PathLike | None) -> None:
    """Write ``text`` (ending in a newline) to ``path`` with :func:`write_file`, or to stdout when
    ``path`` is None or "-"."""
    if not text.endswith("\n"):
        text += "\n"
    if path is None or str(path) == "-":
        try:
            sys.stdout.write(text)
        except UnicodeEncodeError:  # a file name that is not UTF-8, or a terminal that is not
            encoding = sys.stdout.encoding or "utf-8"
            sys.stdout.write(text.encode(encoding, "backslashreplace").decode(encoding))
        sys.stdout.flush()
    else:
        write_file(path, text)
