"""vcmr.utils.file_lock serialises processes."""

from __future__ import annotations

import multiprocessing as mp
import time

from vcmr.utils import file_lock


def _hold(path, log, tag):
    with file_lock(path):
        with open(log, "a") as fh:
            fh.write(f"{tag} in\n")
        time.sleep(0.3)
        with open(log, "a") as fh:
            fh.write(f"{tag} out\n")


def test_file_lock_excludes_a_second_process(tmp_path):
    lock, log = tmp_path / ".lock", tmp_path / "log.txt"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hold, args=(str(lock), str(log), t)) for t in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    lines = log.read_text().split()
    # Never interleaved: each "in" is followed by the same process's "out".
    pairs = [(lines[i], lines[i + 2]) for i in range(0, len(lines), 4)]
    assert sorted(lines[0::4]) == ["a", "b"]
    assert all(a == b for a, b in pairs), lines
