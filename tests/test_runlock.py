"""The run-directory lock: one holder, a clear refusal naming it, stale locks taken over, races on a local disk
won by exactly one command, the lease path of object stores (pyarrow's in-memory `mock://` filesystem)."""

import json
import logging
import subprocess
import sys
import threading
import time

import pytest

from hnl_ray.runlock import LOCK, RunLock, RunLocked, run_lock
from hnl_ray.storage import RunDir


def test_second_holder_is_refused_with_the_owner_then_gets_it(tmp_path):
    run = RunDir(str(tmp_path))
    with run_lock(run, "hnl-ray prepare"):
        rec = json.loads((tmp_path / LOCK).read_text())
        assert rec["command"] == "hnl-ray prepare" and rec["pid"] > 0 and rec["heartbeat_at"]
        with pytest.raises(RunLocked, match=r"in use by `hnl-ray prepare` \(pid \d+ on .*last heartbeat \d+ s ago"):
            RunLock(run, "hnl-ray train").acquire()
    assert not (tmp_path / LOCK).exists()
    with run_lock(run, "hnl-ray train"):
        pass


def test_waiting_gets_the_lock_when_it_is_given_back(tmp_path):
    run = RunDir(str(tmp_path))
    first = RunLock(run, "a").acquire()
    threading.Timer(0.5, first.release).start()
    t0 = time.time()
    with run_lock(run, "b", wait_s=10):
        assert time.time() - t0 >= 0.4


def test_stale_heartbeat_and_dead_holder_are_taken_over_with_a_message(tmp_path, caplog):
    run = RunDir(str(tmp_path))
    (tmp_path / LOCK).write_text(json.dumps({"host": "elsewhere", "pid": 1, "command": "hnl-ray run",
                                             "heartbeat_unix": time.time() - 600, "stale_after_s": 120}))
    with caplog.at_level(logging.WARNING, logger="hnl_ray.runlock"):
        with run_lock(run, "mine"):
            assert json.loads((tmp_path / LOCK).read_text())["command"] == "mine"
    assert "taking over the lock" in caplog.text and "last heartbeat was 600 s ago" in caplog.text
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (tmp_path / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "command": "x",
                                             "heartbeat_unix": time.time(), "stale_after_s": 120}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hnl_ray.runlock"):
        with run_lock(run, "mine"):
            pass
    assert f"process {dead.pid} on this host is gone" in caplog.text


def test_heartbeat_moves_and_a_taken_lease_is_noticed(tmp_path):
    run = RunDir(str(tmp_path))
    lock = RunLock(run, "a", heartbeat_s=0.1).acquire()
    first = json.loads((tmp_path / LOCK).read_text())["heartbeat_unix"]
    time.sleep(0.5)
    assert json.loads((tmp_path / LOCK).read_text())["heartbeat_unix"] > first
    (tmp_path / LOCK).write_text(json.dumps({"token": "someone-else", "heartbeat_unix": time.time()}))
    time.sleep(0.4)
    with pytest.raises(Exception, match="taken over"):
        lock.check()
    lock.release()
    assert json.loads((tmp_path / LOCK).read_text())["token"] == "someone-else"  # not ours: left alone


def test_racing_commands_on_a_local_disk_one_wins(tmp_path):
    run = RunDir(str(tmp_path))
    results, barrier = [], threading.Barrier(8)

    def attempt(k):
        barrier.wait()
        try:
            results.append(RunLock(run, f"c{k}").acquire())
        except RunLocked:
            results.append(None)

    threads = [threading.Thread(target=attempt, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    winners[0].release()


def test_object_store_lease(tmp_path):
    run = RunDir("mock:///bucket/runs/a")  # no O_EXCL there: written, then confirmed after settle_s
    assert not run.is_local
    lock = RunLock(run, "a", settle_s=0.05).acquire()
    with pytest.raises(RunLocked, match="in use by `a`"):
        RunLock(run, "b", settle_s=0.05).acquire()
    lock.release()
    assert not run.exists(LOCK)


def test_a_heartbeat_never_leaves_the_lock_missing(tmp_path):
    # the heartbeat rewrites lock.json; were the old file deleted before the new one is moved in, a second command's
    # exclusive create could win in between, and the holder's own next read would think the lock taken over
    run = RunDir(str(tmp_path))
    lock = RunLock(run, "a", heartbeat_s=0.001).acquire()
    try:
        missing = sum(not (tmp_path / LOCK).exists() for _ in range(20000))
        assert missing == 0 and not lock.lost
        with pytest.raises(RunLocked):
            RunLock(run, "b").acquire()
    finally:
        lock.release()
