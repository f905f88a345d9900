"""Progress in logs: transient (``leave=False``) bars stay quiet when short, and every
long step of the package goes through :func:`vcmr.utils.progress_bar`."""

from __future__ import annotations

import ast
import io
from pathlib import Path

from vcmr.utils import progress_bar

PACKAGE = Path(__file__).resolve().parent.parent / "vcmr"

#: Modules that may use tqdm directly: the helper itself, and the training skeleton, which
#: picks Lightning's tqdm bar on a terminal and its own line printer elsewhere.
TQDM_ALLOWED = {"utils.py", "trainers/base.py", "demo/tagging.py", "demo/timing.py"}


def test_short_transient_bar_prints_nothing_in_a_log(monkeypatch):
    monkeypatch.setenv("VCMR_PROGRESS_SECONDS", "3600")
    buf = io.StringIO()
    for _ in progress_bar(range(50), desc="batches", file=buf, leave=False):
        pass
    bar = progress_bar(total=3, desc="frames", file=buf, leave=False)
    bar.update(3)
    bar.close()
    assert buf.getvalue() == ""


def test_transient_bar_prints_once_it_lasts_an_interval(monkeypatch):
    monkeypatch.setenv("VCMR_PROGRESS_SECONDS", "0")
    buf = io.StringIO()
    for _ in progress_bar(range(3), desc="batches", unit="batch", file=buf, leave=False):
        pass
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue()
    assert lines[0].startswith("batches: 0/3 (0%)") and lines[-1].startswith("batches: 3/3 (100%)")
    assert "batch/s" in lines[-1] or "s/batch" in lines[-1]


def test_disabled_bar_prints_nothing(monkeypatch):
    monkeypatch.setenv("VCMR_PROGRESS_SECONDS", "0")
    buf = io.StringIO()
    for _ in progress_bar(range(3), desc="off", file=buf, disable=True):
        pass
    assert buf.getvalue() == ""


def _tqdm_users() -> dict:
    users = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n.split(".")[0] == "tqdm" or n.endswith("TQDMProgressBar") for n in names):
                users.setdefault(path.relative_to(PACKAGE).as_posix(), node.lineno)
    return users


def test_long_steps_use_the_progress_helper():
    direct = {f: line for f, line in _tqdm_users().items() if f not in TQDM_ALLOWED}
    assert not direct, f"use vcmr.utils.progress_bar instead of tqdm in: {direct}"
    assert "utils.py" in _tqdm_users()  # the check does see imports

