"""Audio cache for tagging data: parallel decode, resume, bad files dropped with counts."""

import json

import numpy as np
import pytest
import soundfile as sf

from vcmr.audio.io import load_audio, save_audio
from vcmr.data.tagging import AudioStore, CropDataset, drop_unusable, parse_mtat_pons2017
from vcmr.preprocess.tagging_cache import build_cache
from vcmr.scripts.tagging_cache import main


def _gt(clip, pos):
    return f"{clip}\t[{', '.join('1.0' if i == pos else '0.0' for i in range(50))}]\n"


@pytest.fixture
def mtat(tmp_path):
    """pons2017 files for 5 clips at 22.05 kHz stereo-free wav; clip 3 empty, clip 4 corrupt."""
    root = tmp_path / "mtat"
    (root / "f").mkdir(parents=True)
    t = np.arange(22050 * 2) / 22050
    for i in range(3):
        save_audio(root / f"f/clip{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)).astype(np.float32), 22050)
    (root / "f/clip3.mp3").write_bytes(b"")
    (root / "f/clip4.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00garbage" * 50)
    (root / "index_mtt.tsv").write_text("".join(f"{i}\tf/clip{i}.{'wav' if i < 3 else 'mp3'}\n" for i in range(5)))
    (root / "train_gt_mtt.tsv").write_text(_gt(0, 0) + _gt(3, 1) + _gt(1, 2))
    (root / "val_gt_mtt.tsv").write_text(_gt(2, 3) + _gt(4, 4))
    (root / "test_gt_mtt.tsv").write_text(_gt(0, 5))
    return root


@pytest.mark.parametrize("fmt, workers", [("int16", 2), ("float16", 0), ("flac", 0)])
def test_cache_converts_and_reports_bad_files(mtat, tmp_path, fmt, workers):
    idx = parse_mtat_pons2017(mtat)
    cache = tmp_path / f"cache_{fmt}"
    report = build_cache(idx, cache, 16000, fmt, num_workers=workers, progress=False)
    assert report.converted == 3 and report.skipped == 0
    assert set(report.failed) == {"f/clip3.mp3", "f/clip4.mp3"}
    assert "empty" in report.failed["f/clip3.mp3"]
    assert report.dropped_per_split == {"train": 1, "valid": 1, "test": 0}
    assert (cache / "failed.tsv").read_text().count("\n") == 2
    assert json.loads((cache / "cache_info.json").read_text()) == {"sample_rate": 16000, "format": fmt}
    # Cached audio equals a direct decode at 16 kHz (within the storage precision).
    store = AudioStore(mtat, 16000, cache)
    kept, drops = drop_unusable(idx, store)
    assert drops.counts() == {"train": 1, "valid": 1, "test": 0}
    assert [t.key for t in kept.splits["train"]] == ["0", "1"] and [t.key for t in kept.splits["valid"]] == ["2"]
    ref = load_audio(mtat / "f/clip1.wav", 16000)
    got = store.load(kept.splits["train"][1])
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-3 if fmt == "float16" else 1e-4)
    assert store.num_samples(kept.splits["train"][1]) == ref.size
    np.testing.assert_allclose(store.load_window(kept.splits["train"][1], 1000, 500), ref[1000:1500], atol=2e-3)
    x, _ = CropDataset(kept.splits["train"], store, 2187, random_crop=True)[0]
    assert x.shape == (1, 2187)


def test_cache_resumes_and_refuses_mixing(mtat, tmp_path):
    idx = parse_mtat_pons2017(mtat)
    cache = tmp_path / "cache"
    build_cache(idx, cache, 16000, "int16", num_workers=0, progress=False)
    (cache / "f/clip2.npy").unlink()  # as if interrupted before this file
    stamp = (cache / "f/clip0.npy").stat().st_mtime_ns
    report = build_cache(idx, cache, 16000, "int16", num_workers=0, progress=False)
    assert report.converted == 1 and report.skipped == 2 and len(report.failed) == 2
    assert (cache / "f/clip0.npy").stat().st_mtime_ns == stamp
    assert not list(cache.rglob("*.tmp*"))  # atomic writes leave no temporaries
    with pytest.raises(ValueError, match="int16 audio at 16000 Hz"):
        build_cache(idx, cache, 22050, "int16", num_workers=0, progress=False)
    with pytest.raises(ValueError, match="format"):
        build_cache(idx, tmp_path / "other", 16000, "mp3", num_workers=0, progress=False)


def test_command_line(mtat, tmp_path, capsys):
    cache = tmp_path / "cli_cache"
    report = main(["--config", "supervised.yaml", "data.name=magnatagatune", f"data.root={mtat}",
                   f"data.cache.dir={cache}", "data.cache.num_workers=0"])
    assert report.converted == 3
    out = capsys.readouterr().out
    assert "3 converted" in out and "2 failed" in out and "train 1, valid 1, test 0" in out
    assert sf.info(str(mtat / "f/clip0.wav")).samplerate == 22050  # sources untouched
    with pytest.raises(SystemExit, match="data.cache.dir is null"):
        main(["--config", "supervised.yaml", "data.name=magnatagatune", f"data.root={mtat}"])
