"""Atomic, durable writes: a temp file (or directory) beside the target, fsync'd, then one rename.

An interrupted run (an exception, Ctrl-C, SIGKILL, a power cut after the call returned) therefore leaves either the
old target or the new one, never a half-written file, and a write that returned is on disk (the file and its
directory entry are fsync'd).

Directories (:func:`atomic_dir`: ``train --out``, ``export --out``, ``classify train --out``) are built in a hidden
sibling ``.<name>.tmp-*`` and swapped in with one ``renameat2(RENAME_EXCHANGE)`` of the complete new directory and
the old one, so the target path always names a complete directory. Leftovers of killed runs (hidden ``.<name>.tmp-*``
and ``.<name>.old-*`` siblings that no running process holds) are removed at the next run for the same target; on a
file system without RENAME_EXCHANGE the swap takes two renames and a run killed between them is rolled back (the old
directory put back) at the next run.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STALE_SECONDS = 60.0  # an unlocked temp sibling older than this is a leftover of a killed run
FAILPOINT_ENV = "HUMWATCH_FAILPOINT"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def failpoint(name: str) -> None:
    """For the crash tests (tests/test_hostile.py): SIGKILL this process at the point ``name`` when the environment
    variable HUMWATCH_FAILPOINT names it. A no-op otherwise."""
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: str | Path) -> None:
    """fsync a directory, so that renames and new entries in it survive a power cut (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path in the target's directory; on success it is fsync'd and replaces ``path``, on error it is
    removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (deepest first), then ``root`` itself."""
    for d, _, files in os.walk(root, topdown=False):
        for f in files:
            p = os.path.join(d, f)
            if not os.path.islink(p):
                _fsync_file(Path(p))
        fsync_dir(d)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _lock_dir(path: Path, blocking: bool = True) -> int | None:
    """An fd of directory ``path`` holding an exclusive flock (None when another process holds it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _claim_leftover(cand: Path) -> int | None:
    """A locked fd of ``cand`` if it is a leftover of a killed run -- a real directory (not a link), older than
    ``STALE_SECONDS``, that no live process holds locked -- else None."""
    try:
        if not cand.is_dir() or cand.is_symlink() or time.time() - cand.stat().st_mtime < STALE_SECONDS:
            return None
        return _lock_dir(cand, blocking=False)  # None: a running export/train owns it
    except OSError:
        return None


def clean_leftovers(path: str | Path) -> list[Path]:
    """Remove what killed runs left beside ``path`` (``.<name>.tmp-*``, ``.<name>.old-*`` that no live process holds
    and that are older than a minute); if ``path`` is missing and an old copy was left between the two renames of
    the fallback swap, put it back. Returns what was removed or restored."""
    path = Path(path)
    done: list[Path] = []
    if not path.parent.is_dir():
        return done
    for pattern in (f".{path.name}.old-*", f".{path.name}.tmp-*"):
        for cand in sorted(path.parent.glob(pattern)):
            fd = _claim_leftover(cand)
            if fd is None:
                continue
            try:
                if ".old-" in cand.name and not os.path.lexists(path):
                    os.replace(cand, path)  # killed between the fallback's two renames: the old one goes back
                else:
                    shutil.rmtree(cand, ignore_errors=True)
                done.append(cand)
            finally:
                os.close(fd)
    return done


@contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory in a temp sibling and swap it into place, complete and fsync'd, at the end.

    An existing directory at ``path`` is replaced only once the new one is complete (and only if ``overwrite``), in
    one atomic exchange; leftovers of killed earlier runs for the same ``path`` are removed first.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise FileExistsError(f"not a directory (a dangling symlink): {path}")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"not a directory: {path}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"already exists: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    fd = _lock_dir(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        fsync_tree(tmp)
        failpoint("atomic-dir:built")
        if os.path.lexists(path):
            if not _exchange(tmp, path):
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.rmdir(old)
                old_fd = _lock_dir(path)  # held while it is away, so no cleaner puts it back meanwhile
                try:
                    os.replace(path, old)
                    failpoint("atomic-dir:between-renames")
                    os.replace(tmp, path)
                finally:
                    os.close(old_fd)
                tmp = old
            fsync_dir(path.parent)
            shutil.rmtree(tmp, ignore_errors=True)  # the old directory, now at the temp name
        else:
            os.replace(tmp, path)
            fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(fd)


@contextmanager
def scratch_dir(prefix: str, parent: str | Path | None = None) -> Iterator[Path]:
    """A private working directory (removed at the end), held locked while in use; unlocked ones with the same
    ``prefix`` that killed runs left in ``parent`` (the system temp directory by default) are removed first."""
    parent = Path(parent or tempfile.gettempdir())
    for cand in parent.glob(f"{prefix}*"):
        fd = _claim_leftover(cand)
        if fd is not None:
            shutil.rmtree(cand, ignore_errors=True)
            os.close(fd)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fd = _lock_dir(tmp)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)
