"""One writer per run directory: an exclusive lock file (`<run_dir>/lock.json`) with its owner and a heartbeat.

A stage command takes the lock before it writes and gives it back when it ends. A second command on the same run
directory refuses at once (or waits `wait_s`) and names the holder: host, pid, command, last heartbeat. A lock
whose heartbeat is older than `stale_s` (the holder was killed, or its machine died), or whose holder is a dead
process on this host, is taken over with a warning.

What it guarantees, per filesystem:

* local disks (and NFS v3+ with close-to-open consistency): creation is atomic (`O_CREAT | O_EXCL`) and a stale
  lock is moved aside with an atomic rename before the new one is created, so exactly one of two racing commands
  gets the lock, whatever their timing;
* object stores (s3://, gs:// through pyarrow): pyarrow's filesystems offer no conditional write (no
  `If-None-Match`), so the lock is a lease: written, then read back after `settle_s`; a command that finds
  another owner then backs off. This excludes commands started more than `settle_s` apart (the usual case: a
  second launch on a run in progress) but not two started within the same second; each heartbeat re-reads the
  lease, and a holder that finds it taken stops before writing more (`LockLost`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from .errors import HnlRayError
from .storage import RunDir

log = logging.getLogger(__name__)

LOCK = "lock.json"


class RunLocked(HnlRayError, RuntimeError):
    """Another command holds the run directory."""


class LockLost(HnlRayError, RuntimeError):
    """This command's lease was taken over (object stores: a racing start, or a heartbeat that stalled)."""


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    def __init__(self, run: RunDir, command: str | None = None, stale_s: float = 120.0, heartbeat_s: float = 15.0,
                 settle_s: float = 2.0):
        self.run, self.stale_s, self.heartbeat_s, self.settle_s = run, stale_s, heartbeat_s, settle_s
        self.token = uuid.uuid4().hex
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                      "command": command or " ".join(os.path.basename(a) if i == 0 else a
                                                     for i, a in enumerate(sys.argv))[:300]}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    # -- the record -----------------------------------------------------------------
    def _record(self, acquired: float) -> bytes:
        now = _now()
        return (json.dumps({**self.owner, "acquired_at": _iso(acquired), "heartbeat_at": _iso(now),
                            "heartbeat_unix": now, "stale_after_s": self.stale_s}, indent=2) + "\n").encode()

    def read(self) -> dict | None:
        """The current lock record, None when there is none; an unreadable one counts as stale."""
        if not self.run.exists(LOCK):
            return None
        try:
            return json.loads(self.run.read_bytes(LOCK))
        except (OSError, ValueError):  # being written right now, or damaged: judged by its age
            mtime = self.run.fs.get_file_info(self.run.path(LOCK)).mtime
            return {"heartbeat_unix": mtime.timestamp() if mtime else 0, "host": "?", "pid": -1,
                    "command": "(lock file being written or unreadable)"}

    def _stale(self, rec: dict) -> str | None:
        """Why the lock in `rec` may be taken over, or None when its holder is alive."""
        age = _now() - float(rec.get("heartbeat_unix") or 0)
        if age > float(rec.get("stale_after_s") or self.stale_s):
            return f"its last heartbeat was {age:.0f} s ago"
        if rec.get("host") == self.owner["host"] and isinstance(rec.get("pid"), int) and rec["pid"] > 0 \
                and not _pid_alive(rec["pid"]):
            return f"process {rec['pid']} on this host is gone"
        return None

    def _describe(self, rec: dict) -> str:
        age = _now() - float(rec.get("heartbeat_unix") or 0)
        return (f"run directory {self.run.uri} is in use by `{rec.get('command')}` (pid {rec.get('pid')} on "
                f"{rec.get('host')}, since {rec.get('acquired_at')}, last heartbeat {age:.0f} s ago); wait for it "
                "to finish or use another run directory (a killed holder's lock is taken over after "
                f"{rec.get('stale_after_s', self.stale_s):.0f} s)")

    # -- acquire / release -----------------------------------------------------------
    def _try_create(self, acquired: float) -> bool:
        data = self._record(acquired)
        if self.run.is_local:
            path = self.run.path(LOCK)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return True
        if self.run.exists(LOCK):
            return False
        self.run.write_bytes(LOCK, data)
        time.sleep(self.settle_s)  # a racing writer's lease lands within this; the later one wins, both see it
        rec = self.read()
        return rec is not None and rec.get("token") == self.token

    def _take_over(self, rec: dict, why: str) -> None:
        log.warning("taking over the lock of %s held by `%s` (pid %s on %s): %s", self.run.uri, rec.get("command"),
                    rec.get("pid"), rec.get("host"), why)
        if self.run.is_local:
            try:  # atomic: of two commands taking over, one moves it aside, the other finds it gone
                os.rename(self.run.path(LOCK), self.run.path(f".{LOCK}.stale-{self.token[:8]}"))
            except FileNotFoundError:
                return
            os.remove(self.run.path(f".{LOCK}.stale-{self.token[:8]}"))
        else:
            self.run.delete(LOCK)

    def acquire(self, wait_s: float = 0.0) -> "RunLock":
        deadline = _now() + wait_s
        acquired = _now()
        while True:
            if self._try_create(acquired):
                break
            rec = self.read()
            if rec is None:
                continue  # released in between
            why = self._stale(rec)
            if why is not None:
                self._take_over(rec, why)
                continue
            if _now() >= deadline:
                raise RunLocked(self._describe(rec))
            time.sleep(min(1.0, max(0.05, deadline - _now())))
        self._thread = threading.Thread(target=self._beat, name="hnl-ray-run-lock", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        acquired = _now()
        while not self._stop.wait(self.heartbeat_s):
            rec = self.read()
            if rec is None or rec.get("token") != self.token:
                self.lost = True
                log.error("the lock of %s was taken over by another command: stop writing there", self.run.uri)
                return
            self.run.write_bytes(LOCK, self._record(acquired))

    def check(self) -> None:
        """Raise LockLost when the heartbeat found the lock taken over (call between units of work)."""
        if self.lost:
            raise LockLost(f"the lock of {self.run.uri} was taken over by another command")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        rec = self.read()
        if rec is not None and rec.get("token") == self.token:
            self.run.delete(LOCK)


@contextmanager
def run_lock(run: RunDir, command: str | None = None, wait_s: float = 0.0, **kwargs) -> Iterator[RunLock]:
    """Hold the run directory's lock for the duration of the block (see the module docstring)."""
    lock = RunLock(run, command, **kwargs).acquire(wait_s)
    try:
        yield lock
    finally:
        lock.release()


_held: dict[str, int] = {}
_held_guard = threading.Lock()


@contextmanager
def hold(run: RunDir, command: str | None = None, wait_s: float = 0.0) -> Iterator[None]:
    """`run_lock`, re-entrant within one process: a pipeline holds the lock once for all its stages."""
    with _held_guard:
        if _held.get(run.uri):
            _held[run.uri] += 1
            lock = None
        else:
            lock = RunLock(run, command).acquire(wait_s)
            _held[run.uri] = 1
    try:
        yield
    finally:
        with _held_guard:
            _held[run.uri] -= 1
            if _held[run.uri] == 0:
                del _held[run.uri]
        if lock is not None:
            lock.release()
