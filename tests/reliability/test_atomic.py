"""Atomic writes: umask permissions, temporary files invisible to readers' globs, nothing half-written."""

from __future__ import annotations

import os
import stat

import pytest

from vcmr.data.audio_folder import find_audio_files
from vcmr.data.manifest import read_records
from vcmr.utils import atomic_path, atomic_write_text, is_hidden


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_get_the_umask_permissions(tmp_path, umask_022):
    atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    os.umask(0o002)
    atomic_write_text(tmp_path / "b.txt", "x")
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o664


def test_a_write_in_progress_matches_no_reader_glob(tmp_path):
    (tmp_path / "records").mkdir()
    with atomic_path(tmp_path / "records" / "v1.json") as tmp:
        tmp.write_text("{")  # half-written
        assert tmp.name == "v1.json" and is_hidden(tmp, tmp_path)
        assert list((tmp_path / "records").glob("*.json")) == []
        assert read_records(tmp_path) == {}
    assert [p.name for p in (tmp_path / "records").iterdir()] == ["v1.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "m.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


def test_recursive_scans_skip_what_a_killed_writer_left(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "song.wav").write_bytes(b"RIFF")
    (tmp_path / "a" / ".tmp-x1y2").mkdir()
    (tmp_path / "a" / ".tmp-x1y2" / "half.wav").write_bytes(b"RIFF")
    assert [p.name for p in find_audio_files(tmp_path, [".wav"])] == ["song.wav"]
