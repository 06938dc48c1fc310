"""Guards around run directories: one writer per directory, clear errors for damaged files, SIGTERM.

* :class:`RunLock` — ``<run dir>/.lock``, an ``fcntl.flock`` held by the process that writes the
  directory. A second writer gets :class:`RunLockedError` (a ConfigError: the CLI exits 2) naming the
  holder's pid. The kernel drops the lock when its holder dies (however it dies), so the lock of a
  dead process is stale by construction and the next writer takes it over atomically (no pid
  guessing, no race). The lock file is opened with ``O_NOFOLLOW``, must be a regular file of its own
  and is rewritten only when it is empty or holds a steepest lock record, so a ``.lock`` symbolic link
  or a user's file of that name is never written. While holding it the writer removes the temp files
  of atomic writes a SIGKILL interrupted, by their exact name only (:func:`remove_stale_temps`). ``--nproc`` ranks write under their
  parent's lock (the parent holds it for the whole job; its ranks die with it).
* :func:`read_json` — a JSON file the run reads back, validated: a missing, damaged or wrongly shaped
  file raises ConfigError naming the file and saying what to do.
* :func:`check_output_dir` — an output directory that is a file, lies under a file, or cannot be
  written is rejected (ConfigError) before anything is created.
* :class:`Terminated` and :func:`handle_sigterm` — SIGTERM turned into an exception (a KeyboardInterrupt,
  so every ``finally`` runs and finished work is kept) that the CLI reports and exits 143 on.

Example:
    >>> with RunLock("runs/x"):  # creates and locks runs/x  # doctest: +SKIP
    ...     ...                            # write runs/x
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from steepest._io import TEMP_PATTERN, FileTooLarge, read_bytes_limited
from steepest.app.runs import ConfigError

LOCK_NAME = ".lock"


class RunLockedError(ConfigError):
    """The run directory is being written by another live process."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM (after :func:`handle_sigterm`)."""

    signum = signal.SIGTERM


def raise_terminated(signum, frame):
    raise Terminated(f"received signal {signal.Signals(signum).name}")


@contextmanager
def handle_sigterm():
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (no-op in other threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


#: The folders of a run directory steepest writes: the directory itself and these subfolders.
RUN_SUBFOLDERS = ("checkpoints", "metrics", "results", "diagnostics", "figures", "cells")
#: The suffixes of the files steepest writes atomically (a temp file's target must end in one).
RUN_SUFFIXES = (".json", ".jsonl", ".pt", ".txt", ".html", ".png")
#: Largest JSON file a run reads back (config, results, caches, the tuned table): far above any real one.
MAX_JSON_BYTES = 64 * 2**20


def is_run_directory(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` already holds steepest's ``config.json`` (a regular file holding a JSON object
    with ``config`` (compare) or ``experiment`` (reproduce)): the only folders whose temp files
    :func:`remove_stale_temps` touches."""
    cfg = Path(folder) / "config.json"
    try:
        if cfg.is_symlink() or not cfg.is_file():
            return False
        data = json.loads(read_bytes_limited(cfg, MAX_JSON_BYTES))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and ("config" in data or "experiment" in data)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files of atomic writes a SIGKILL cut short in run directory ``folder``; returns them.

    Only what steepest itself leaves: names matching :data:`steepest._io.TEMP_PATTERN`
    (``.<name>.<8 characters>.tmp``) whose ``<name>`` ends in one of :data:`RUN_SUFFIXES`, regular files
    (no links), directly in ``folder`` or one of its :data:`RUN_SUBFOLDERS` (never deeper), only when
    ``folder`` already holds steepest's ``config.json`` (:func:`is_run_directory`) and only while this
    process holds ``folder``'s :class:`RunLock` (no other writer can be mid-write). Anything else stays.
    """
    folder = Path(folder)
    try:
        held = str(folder.resolve()) in RunLock._held
    except OSError:
        return []
    if not held or not is_run_directory(folder):
        return []
    gone = []
    for sub in (folder, *(folder / name for name in RUN_SUBFOLDERS)):
        if sub.is_symlink() or not sub.is_dir():
            continue
        for p in sub.iterdir():
            m = TEMP_PATTERN.match(p.name)
            if m is None or not m["target"].endswith(RUN_SUFFIXES) or p.is_symlink() or not p.is_file():
                continue
            try:
                p.unlink()
                gone.append(p)
            except FileNotFoundError:
                pass
    return gone


def open_lock_file(path: str | os.PathLike) -> int:
    """A read-write descriptor of the lock file ``path``, created if missing, never through a link.

    ConfigError when ``path`` is a symbolic link (``O_NOFOLLOW``), not a regular file, or a hard link of
    another file: steepest writes its pid into the lock, so it must be steepest's own file. Nothing is
    truncated here (:func:`claim_lock_file` does that once the content is known to be steepest's).
    """
    path = Path(path)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fix = "remove it (steepest creates its own) or choose another --out"
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(
                f"{path} is a symbolic link, not steepest's lock file; steepest does not follow it: {fix}"
            ) from None
        raise ConfigError(f"{path} cannot be opened as steepest's lock file ({e.strerror}): {fix}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"a hard link ({st.st_nlink} names)"
        raise ConfigError(f"{path} is {what}, not steepest's lock file: {fix}")
    return fd


def claim_lock_file(fd: int, path: str | os.PathLike) -> None:
    """Write this process's pid into the locked file ``fd`` if it is empty or holds a steepest lock
    record (``{"pid": ...}``); ConfigError (nothing written) when it holds anything else."""
    head = os.pread(fd, 4097, 0)
    if head.strip():
        try:
            info = json.loads(head.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            info = None
        if not (isinstance(info, dict) and set(info) <= {"pid", "since"} and isinstance(info.get("pid"), int)):
            raise ConfigError(
                f"{path} is not steepest's lock file (it holds other data); steepest leaves it "
                "untouched: move it away or choose another --out"
            )
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode(), 0)
    os.fsync(fd)


class RunLock:
    """An exclusive, process-lifetime lock on ``directory`` (see the module docstring).

    ``RunLock(d).acquire()`` creates ``d`` if needed, takes ``d/.lock`` or raises
    :class:`RunLockedError` naming the holder's pid; ``release()`` (or leaving a ``with`` block) frees
    it. Re-acquiring a directory this process already holds nests (counted), so a library call inside
    a locked run does not lock itself out. ``clean=True`` removes leftover temp files once held (:func:`remove_stale_temps`).
    """

    _held: dict[str, list] = {}  # resolved directory -> [fd, depth]: this process's locks

    def __init__(self, directory: str | os.PathLike, *, clean: bool = True, what: str = "run directory") -> None:
        self.directory = Path(directory)
        self.clean = clean
        self.what = what
        self._key: str | None = None

    def acquire(self) -> RunLock:
        import fcntl  # lazy: POSIX only

        self.directory.mkdir(parents=True, exist_ok=True)
        key = str(self.directory.resolve())
        if key in RunLock._held:
            RunLock._held[key][1] += 1
            self._key = key
            return self
        path = self.directory / LOCK_NAME
        fd = open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self._holder(path)
            raise RunLockedError(
                f"{self.directory} is in use: another steepest process ({holder}) is writing this {self.what}. "
                f"Wait for it to finish or stop it{' (kill ' + holder.split()[1] + ')' if holder.startswith('pid ') else ''}"
                ", or choose another --out"
            ) from None
        try:
            claim_lock_file(fd, path)
        except BaseException:
            os.close(fd)
            raise
        RunLock._held[key] = [fd, 1]
        self._key = key
        if self.clean:
            remove_stale_temps(self.directory)
        return self

    @staticmethod
    def _holder(path: Path) -> str:
        for _ in range(20):  # the holder writes its pid right after taking the lock
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                try:
                    text = os.read(fd, 4096)
                finally:
                    os.close(fd)
                info = json.loads(text or b"null")
                if isinstance(info, dict) and isinstance(info.get("pid"), int):
                    return f"pid {info['pid']} since {info.get('since', '?')}"
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        return "pid unknown"

    def release(self) -> None:
        key, self._key = self._key, None
        entry = RunLock._held.get(key) if key is not None else None
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0 and key is not None:
            del RunLock._held[key]
            os.close(entry[0])  # closing the descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """ConfigError unless ``path`` is (or can be created as) a writable directory; creates nothing.

    Walks up to the first existing ancestor: every existing component must be a directory and the
    deepest existing one writable and searchable.
    """
    path = Path(path)
    try:
        return _check_output_dir(path, flag)
    except OSError as e:  # a name too long for the file system (ENAMETOOLONG), a loop of links (ELOOP), ...
        raise ConfigError(
            f"{flag} {str(path)[:200]}{'...' if len(str(path)) > 200 else ''}: {e.strerror}; choose another {flag}"
        ) from None


def _check_output_dir(path: Path, flag: str) -> Path:
    long = next((part for part in path.parts if len(os.fsencode(part)) > 255), None)
    if long is not None:
        raise OSError(
            errno.ENAMETOOLONG,
            f"{os.strerror(errno.ENAMETOOLONG)} (the name {long[:40]}... is "
            f"{len(os.fsencode(long))} bytes, more than the 255 a file name may have)",
        )
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise ConfigError(f"{flag} {path}: {probe} is a dangling symbolic link; remove it or choose another {flag}")
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"lies under {probe}, which is a file"
        raise ConfigError(f"{flag} {path} {where}, not a directory; choose another {flag}")
    if not os.access(probe, os.W_OK | os.X_OK) or _read_only_fs(probe):
        raise ConfigError(
            f"{flag} {path}: cannot write in {probe} (permission denied or read-only); choose a writable {flag}"
        )
    return path


def _read_only_fs(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return True
    if st.f_flag & os.ST_RDONLY:
        return True
    # pseudo file systems (sysfs, procfs) refuse new entries even to root: 0 total blocks
    return st.f_blocks == 0


#: errno values of a file operation the environment refused: a full disk or quota, a read-only file
#: system, a name too long, a permission, a path component of the wrong type.
DISK_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.ENAMETOOLONG,
        errno.EACCES,
        errno.EPERM,
        errno.EFBIG,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ELOOP,
    }
)


def disk_error_text(e: OSError) -> str | None:
    """The CLI's message for an OSError of :data:`DISK_ERRNOS` (naming the file), or None for others."""
    if e.errno not in DISK_ERRNOS:
        return None
    where = f" {e.filename}" if e.filename else ""
    return (
        f"cannot write or read{where}: {e.strerror or os.strerror(e.errno)}. Work finished before it is saved: "
        "fix the cause (free space, permissions, a shorter path) and rerun with --resume"
    )


def read_json(path: str | os.PathLike, what: str, fix: str, check: Callable[[Any], str | None] | None = None) -> Any:
    """Parse the JSON file ``path``; ConfigError naming it and saying ``fix`` when it is damaged.

    ``what`` describes the file (``"checkpoint results of adamw"``); ``check(data)`` returns a
    description of a wrong shape (or None when the data is fine).
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise ConfigError(f"{path} ({what}) is not a regular file (a device or a pipe); give a JSON file")
        data = json.loads(read_bytes_limited(path, MAX_JSON_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} ({what}) is missing: {fix}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} ({what}) is a directory, not a JSON file: {fix}") from None
    except FileTooLarge as e:
        raise ConfigError(f"{e} ({what}): {fix}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} ({what}) is damaged (not valid JSON: {e}): {fix}") from None
    except OSError as e:
        raise ConfigError(f"{path} ({what}) cannot be read ({e.strerror}): {fix}") from None
    problem = check(data) if check is not None else None
    if problem:
        raise ConfigError(f"{path} ({what}) has the wrong shape ({problem}): {fix}")
    return data


def mapping_of(keys: dict[str, type | tuple]) -> Callable[[Any], str | None]:
    """A :func:`read_json` ``check``: a JSON object holding ``keys`` with values of the given types."""

    def check(data: Any) -> str | None:
        if not isinstance(data, dict):
            return f"expected a JSON object, got {type(data).__name__}"
        for k, t in keys.items():
            if k not in data:
                return f"no key {k!r}"
            if not isinstance(data[k], t):
                return f"{k!r} is {type(data[k]).__name__}"
        return None

    return check


__all__ = [
    "RunLock",
    "RunLockedError",
    "Terminated",
    "handle_sigterm",
    "remove_stale_temps",
    "is_run_directory",
    "open_lock_file",
    "claim_lock_file",
    "RUN_SUBFOLDERS",
    "MAX_JSON_BYTES",
    "check_output_dir",
    "read_json",
    "mapping_of",
    "LOCK_NAME",
    "DISK_ERRNOS",
    "disk_error_text",
]
