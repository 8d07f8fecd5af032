"""The lock of a run folder (``OUT/.lock``): one run at a time writes a folder.

Taking the lock is ``fcntl.flock`` on the file, kept open while held; the kernel releases
it when the holder ends, even by ``kill -9``, so taking over the lock of a run that ended
is atomic (never delete-then-create): two runs can never both hold it.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from typing import Optional

LOCK = ".lock"


class RunError(RuntimeError):
    """A run folder that cannot be used as asked: the message names it and what to do."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLock:
    """``OUT/.lock``: one run at a time writes a folder.

    The lock is ``fcntl.flock`` on the file, kept open while held: the kernel releases it
    when the holder ends, even by ``kill -9``, and taking it is atomic, so two runs can never
    both hold it (no delete-then-create). The file holds ``{"pid", "host", "started",
    "flock"}`` for the messages. A file left by a dead holder is reported and taken over; a
    file without ``flock`` (an older version's lock) whose pid still runs on this host, or a
    lock of another host, is respected. ``release`` removes the file, then unlocks.
    """

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOCK)
        self.held = False
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        import fcntl
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "flock": True}
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a live run
                os.close(fd)
                self._refuse(self._read())
            if not self._same_file(fd):  # its holder removed it as we opened it: again
                os.close(fd)
                continue
            other = self._read()
            if other and self._alive_without_flock(other, me["host"]):
                os.close(fd)
                self._refuse(other)
            if other:
                print(f"micronbert: taking over the stale lock {self.path} of pid "
                      f"{other.get('pid')} (not running)", file=sys.stderr)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            self._fd, self.held = fd, True
            return self
        raise RunError(f"{self.path}: could not take the lock (another run keeps taking it)")

    def _same_file(self, fd: int) -> bool:
        try:
            a, b = os.fstat(fd), os.stat(self.path)
        except FileNotFoundError:
            return False
        return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)

    @staticmethod
    def _alive_without_flock(other: dict, host: str) -> bool:
        """A lock file we could flock, but whose writer may still run: an older version's
        lock (no ``flock`` field) of a live pid on this host, or a lock of another host."""
        if other.get("host") not in (None, host):
            return True
        pid = other.get("pid")
        return not other.get("flock") and isinstance(pid, int) and _pid_alive(pid)

    def _refuse(self, other: dict):
        pid, host = other.get("pid"), other.get("host")
        where = f"pid {pid}" + (f" on {host}" if host not in (None, socket.gethostname()) else "")
        raise RunError(f"{os.path.dirname(self.path)} is in use by another run ({where}, "
                       f"lock {self.path}); wait for it to end, choose another --out, or "
                       f"delete the lock if that run is gone")

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                d = json.load(f)
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}  # unreadable, empty or half-written: nobody's

    def release(self):
        if self.held and self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)  # before unlocking: a waiter then sees another file
            os.close(self._fd)
        self._fd, self.held = None, False


