"""Hostile media (issue 15, item 10): samples beyond full scale, absurd header sample rates,
permission problems, links/FIFOs/sockets/unreadable folders, and bounded memory for
``data.verify=full``. The files come from ``hostile.py`` beside this file."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vcmr.audio.io import AudioDecodeError, AudioRangeWarning, audio_info, load_audio, save_audio, verify_audio
from vcmr.data.audio_folder import index_folder, scan_folder

sys.path.insert(0, str(Path(__file__).parent))
import hostile  # noqa: E402

SR = 16000


# --------------------------------------------------------------------------------------
# Samples and headers
# --------------------------------------------------------------------------------------


def test_samples_beyond_full_scale_are_clipped_and_the_file_named(tmp_path):
    loud = hostile.loud_float_wav(tmp_path / "loud.wav", peak=60.0)
    with pytest.warns(AudioRangeWarning, match=r"loud\.wav: samples reach 60"):
        y = load_audio(loud, SR)
    raw = sf.read(str(loud), dtype="float32")[0]
    np.testing.assert_array_equal(y, np.clip(raw, -1.0, 1.0))
    assert y.min() == -1.0 and y.max() == 1.0
    # A window and a resampled read are in range too.
    with pytest.warns(AudioRangeWarning):
        assert np.abs(load_audio(loud, 22050, offset=0.2, duration=0.3)).max() <= 1.0
    # A little over full scale (lossy-codec overshoot): clipped, no warning.
    hot = hostile.loud_float_wav(tmp_path / "hot.wav", peak=1.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.abs(load_audio(hot, SR)).max() == 1.0


def test_nan_and_inf_samples_are_rejected(tmp_path):
    bad = hostile.nan_wav(tmp_path / "nan.wav")
    for read in (lambda: load_audio(bad, SR), lambda: verify_audio(bad)):
        with pytest.raises(AudioDecodeError, match=r"nan\.wav: decoded samples contain NaN or Inf"):
            read()


def test_a_header_claiming_2_hz_is_a_bad_header(tmp_path):
    path = hostile.tiny_rate_wav(tmp_path / "two_hz.wav")
    assert path.stat().st_size < 5000
    for read in (lambda: audio_info(path), lambda: load_audio(path, SR), lambda: verify_audio(path)):
        with pytest.raises(AudioDecodeError, match=r"two_hz\.wav: bad header: sample rate 2 Hz is outside"):
            read()
    usable, rejected = index_folder(tmp_path, [".wav"], SR, 1.0, verify="header", progress=False)
    assert usable == [] and "bad header" in rejected[0].reason


# --------------------------------------------------------------------------------------
# Permissions and the hostile corpus, checked in one process that permissions apply to
# --------------------------------------------------------------------------------------

#: Linux capabilities that let root bypass file permissions (linux/capability.h).
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _drop_permission_bypass() -> None:
    """Drop ``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH`` from this process, so file permissions
    apply to root too (what ``setpriv --bounding-set=-dac_override,-dac_read_search`` gives a
    program it starts)."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    keep = ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    data[0].effective &= keep
    data[0].permitted &= keep
    data[0].inheritable &= keep
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _unprivileged_check(perm: str, corpus: str, out_path: str) -> None:
    """In a worker process: give up the permission bypass, read the unreadable files with every
    reader, index both folders, and write what each said to ``out_path`` (JSON)."""
    from vcmr.video.probe import MediaError, probe

    if os.geteuid() == 0:
        _drop_permission_bypass()
    out = {}
    readers = {"audio_info": audio_info, "verify_audio": verify_audio, "load_audio": lambda p: load_audio(p, SR)}
    for name in ("a.wav", "b.mp4"):
        for fn, read in readers.items():
            try:
                read(perm + "/" + name)
                out[name + ":" + fn] = "read"
            except AudioDecodeError as exc:
                out[name + ":" + fn] = str(exc)
    try:
        probe(perm + "/b.mp4")
        out["b.mp4:probe"] = "read"
    except MediaError as exc:
        out["b.mp4:probe"] = str(exc)
    for verify in ("header", "full"):
        usable, rejected = index_folder(perm, [".wav", ".mp4"], SR, 1.0, verify=verify, progress=False)
        out["perm:" + verify] = [[r.relpath, r.reason] for r in rejected]
        usable, rejected = index_folder(corpus, [".wav", ".mp3", ".mp4"], SR, 1.0, verify=verify, progress=False)
        out["corpus:" + verify] = {"usable": [f.relpath for f in usable],
                                   "rejected": {r.relpath: r.reason for r in rejected}}
    Path(out_path).write_text(json.dumps(out))


@pytest.fixture(scope="module")
def unprivileged_checks(tmp_path_factory, warm_start_method):
    """Unreadable files, and the whole hostile corpus, indexed by a process that file
    permissions apply to (root without the capabilities that bypass them)."""
    perm = tmp_path_factory.mktemp("perm")
    save_audio(perm / "a.wav", hostile.tone(1.5, SR), SR)
    hostile.aac_mp4(perm / "b.mp4", 1.5, SR)
    for name in ("a.wav", "b.mp4"):
        hostile.unreadable(perm / name)
    corpus = tmp_path_factory.mktemp("hostile") / "corpus"
    expected = hostile.make_corpus(corpus)
    save_audio(corpus / "good" / "song.wav", hostile.tone(2.0, SR), SR)
    out_path = tmp_path_factory.mktemp("checks") / "checks.json"
    proc = multiprocessing.get_context(warm_start_method).Process(
        target=_unprivileged_check, args=(str(perm), str(corpus), str(out_path)))
    proc.start()
    proc.join(180)  # a FIFO opened for reading would block forever: the timeout turns that into a failure
    if proc.is_alive():
        proc.kill()
        proc.join()
        pytest.fail("the unprivileged checks did not finish in 180 s")
    assert proc.exitcode == 0, f"the unprivileged checks failed (exit code {proc.exitcode})"
    return json.loads(out_path.read_text()), expected


def test_permission_problems_say_permission_denied(unprivileged_checks):
    out, _ = unprivileged_checks
    denied = "permission denied (this user cannot read the file)"
    for name in ("a.wav", "b.mp4"):
        for fn in ("audio_info", "load_audio", "verify_audio"):
            msg = out[f"{name}:{fn}"]
            assert msg.endswith(f"{name}: {denied}"), (fn, msg)
    # The video probe opens files through the same opener: not "corrupt or truncated".
    assert out["b.mp4:probe"].endswith(f"b.mp4: {denied}"), out["b.mp4:probe"]
    for verify in ("header", "full"):
        assert out[f"perm:{verify}"] == [["a.wav", denied], ["b.mp4", denied]]


def test_hostile_corpus_is_reported_entry_by_entry(unprivileged_checks):
    out, expected = unprivileged_checks
    for verify in ("header", "full"):
        usable, rejected = out[f"corpus:{verify}"]["usable"], out[f"corpus:{verify}"]["rejected"]
        header_ok = set(hostile.HEADER_INTACT) if verify == "header" else set()
        assert set(usable) == {"good/song.wav"} | header_ok, verify
        assert set(rejected) == set(expected) - header_ok, verify
        for rel, part in expected.items():
            if rel not in header_ok:
                assert part in rejected[rel], (verify, rel, rejected[rel])


def test_scan_follows_file_links_and_reports_the_rest(tmp_path):
    root = tmp_path / "music"
    save_audio(tmp_path / "library" / "song.wav", hostile.tone(1.0, SR), SR)
    root.mkdir()
    os.symlink(tmp_path / "library" / "song.wav", root / "linked_song.wav")
    hostile.fifo(root / "pipe.flac")
    hostile.fifo(root / "pipe.txt")  # not an audio name: not a candidate, not reported
    os.symlink("gone.txt", root / "gone.txt")
    scan = scan_folder(root, [".wav", ".flac"])
    assert [p.name for p in scan.files] == ["linked_song.wav"]
    assert [(r.relpath, r.reason) for r in scan.problems] == [("pipe.flac", "not a regular file (fifo); never opened")]


# --------------------------------------------------------------------------------------
# verify=full keeps one block in memory, not the whole file
# --------------------------------------------------------------------------------------


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["wav", "mp4"])
def test_full_verification_memory_is_bounded(tmp_path, kind):
    seconds = 120.0 if kind == "wav" else 40.0
    path = tmp_path / f"long.{kind}"
    if kind == "wav":
        hostile.long_wav(path, seconds, SR)
    else:
        hostile.aac_mp4(path, seconds, SR)
    whole = seconds * SR * 4  # float32 bytes of the decoded file
    durations = []
    peak = _peak_bytes(lambda: durations.extend(
        f.duration for f in index_folder(tmp_path, [f".{kind}"], SR, 1.0, verify="full", progress=False)[0]))
    assert durations and abs(durations[0] - seconds) < 0.1
    assert peak < 0.15 * whole, f"verify=full held {peak / 1e6:.1f} MB for a {whole / 1e6:.1f} MB decode"
    # Reading the whole file (what verify=full did before) holds all of it.
    assert _peak_bytes(lambda: load_audio(path, SR)) > whole
