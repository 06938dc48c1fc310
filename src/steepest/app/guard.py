"""Guards around run directories: one writer per directory, clear errors for damaged files, SIGTERM.

* :class:`RunLock` — ``<run dir>/.lock``, an ``fcntl.flock`` held by the process that writes the
  directory. A second writer gets :class:`RunLockedError` (a ConfigError: the CLI exits 2) naming the
  holder's pid. The kernel drops the lock when its holder dies (however it dies), so the lock of a
  dead process is stale by construction and the next writer takes it over atomically (no pid
  guessing, no race). While holding it the writer removes leftover ``.*.tmp`` files of atomic writes
  a SIGKILL interrupted (nobody else can be writing them). ``--nproc`` ranks write under their
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

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

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


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete ``.<name>.<random>.tmp`` files (atomic writes cut short) under ``folder``; returns them.

    Only safe while holding ``folder``'s :class:`RunLock` (no other writer can be mid-write).
    """
    gone = []
    for p in Path(folder).rglob(".*.tmp"):
        if p.is_file():
            try:
                p.unlink()
                gone.append(p)
            except FileNotFoundError:
                pass
    return gone


class RunLock:
    """An exclusive, process-lifetime lock on ``directory`` (see the module docstring).

    ``RunLock(d).acquire()`` creates ``d`` if needed, takes ``d/.lock`` or raises
    :class:`RunLockedError` naming the holder's pid; ``release()`` (or leaving a ``with`` block) frees
    it. Re-acquiring a directory this process already holds nests (counted), so a library call inside
    a locked run does not lock itself out. ``clean=True`` removes leftover ``.*.tmp`` files once held.
    """

    _held: dict[str, list] = {}  # resolved directory -> [fd, depth]: this process's locks

    def __init__(self, directory: str | os.PathLike, *, clean: bool = True, what: str = "run directory") -> None:
        self.directory = Path(directory)
        self.clean = clean
        self.what = what
        self._key: str | None = None

    def acquire(self) -> "RunLock":
        import fcntl  # lazy: POSIX only

        self.directory.mkdir(parents=True, exist_ok=True)
        key = str(self.directory.resolve())
        if key in RunLock._held:
            RunLock._held[key][1] += 1
            self._key = key
            return self
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self._holder(path)
            raise RunLockedError(
                f"{self.directory} is in use: another steepest process ({holder}) is writing this {self.what}. "
                f"Wait for it to finish or stop it{' (kill ' + holder.split()[1] + ')' if holder.startswith('pid ') else ''}"
                ", or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        os.fsync(fd)
        RunLock._held[key] = [fd, 1]
        self._key = key
        if self.clean:
            remove_stale_temps(self.directory)
        return self

    @staticmethod
    def _holder(path: Path) -> str:
        for _ in range(20):  # the holder writes its pid right after taking the lock
            try:
                info = json.loads(path.read_text(encoding="utf-8") or "null")
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

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """ConfigError unless ``path`` is (or can be created as) a writable directory; creates nothing.

    Walks up to the first existing ancestor: every existing component must be a directory and the
    deepest existing one writable and searchable.
    """
    path = Path(path)
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
        raise ConfigError(f"{flag} {path}: cannot write in {probe} (permission denied or read-only); "
                          f"choose a writable {flag}")
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


def read_json(path: str | os.PathLike, what: str, fix: str, check: Callable[[Any], str | None] | None = None) -> Any:
    """Parse the JSON file ``path``; ConfigError naming it and saying ``fix`` when it is damaged.

    ``what`` describes the file (``"checkpoint results of adamw"``); ``check(data)`` returns a
    description of a wrong shape (or None when the data is fine).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} ({what}) is missing: {fix}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} ({what}) is a directory, not a JSON file: {fix}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} ({what}) is damaged (not valid JSON: {e}): {fix}") from None
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


__all__ = ["RunLock", "RunLockedError", "Terminated", "handle_sigterm", "remove_stale_temps", "check_output_dir",
           "read_json", "mapping_of", "LOCK_NAME"]
