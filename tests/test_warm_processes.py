"""The suite's warm worker processes (``warm_start_method`` in conftest.py): started with torch and
Lightning already imported, from the session's environment rather than the test's."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from pathlib import Path


def _report(path: str) -> None:
    """In the worker: what it inherited, written to ``path`` (JSON)."""
    Path(path).write_text(json.dumps({
        "warm": [m for m in ("torch", "pytorch_lightning", "vcmr.data.audio_folder") if m in sys.modules],
        "cache": os.environ.get("VCMR_CACHE"),
        "marker": os.environ.get("VCMR_TEST_MARKER"),
    }))


def test_workers_start_warm_from_the_session_environment(warm_start_method, tmp_path, monkeypatch):
    monkeypatch.setenv("VCMR_TEST_MARKER", "set by this test only")
    out = tmp_path / "report.json"
    proc = multiprocessing.get_context(warm_start_method).Process(target=_report, args=(str(out),))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    report = json.loads(out.read_text())
    assert report["warm"] == ["torch", "pytorch_lightning", "vcmr.data.audio_folder"]
    assert report["cache"] == os.environ["VCMR_CACHE"]  # the session's private cache, as in the test
    assert report["marker"] is None


def test_each_xdist_worker_has_its_own_numba_cache():
    # Two processes compiling one of librosa's gufuncs into a shared numba cache can crash
    # (conftest.py): under pytest-xdist the cache folder is the worker's own.
    import pytest

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        pytest.skip("not running under pytest-xdist")
    import numba

    assert Path(numba.config.CACHE_DIR).name == worker
    assert os.environ["NUMBA_CACHE_DIR"] == numba.config.CACHE_DIR
