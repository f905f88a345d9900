"""Demo tagging set: planted tags, MTG-Jamendo layout, generated once and reused."""

import numpy as np
import pytest
import soundfile as sf

from omegaconf import OmegaConf

from vcmr.data.tagging import build_index, parse_mtg_jamendo
from vcmr.demo.synth import SongSpec
from vcmr.demo.tagging import demo_spec, demo_tags, ensure_demo_dataset, prepare

DEMO = {"n_train": 6, "n_valid": 3, "n_test": 3, "duration": 1.0, "seed": 7,
        "categories": ["timbre", "drums", "tempo"], "tempo_slow": [70.0, 95.0], "tempo_fast": [135.0, 160.0]}


def test_demo_set_layout_and_labels(tmp_path):
    root = ensure_demo_dataset(DEMO, 8000, root=tmp_path)
    assert (root / "complete.json").is_file()
    idx = parse_mtg_jamendo(root, "split-0", "top50tags", audio_root=root / "audio", name="demo")
    assert {s: len(t) for s, t in idx.splits.items()} == {"train": 6, "valid": 3, "test": 3}
    assert all(t.split("---")[0] in ("timbre", "drums", "tempo") for t in idx.tags)
    for split, tracks in idx.splits.items():
        for t in tracks:
            # One tag per category; a valid/test tag absent from this tiny train split is ignored.
            assert t.labels.sum() == 3 if split == "train" else 1 <= t.labels.sum() <= 3
            info = sf.info(str(root / "audio" / t.path))
            assert info.samplerate == 8000 and info.frames == 8000
    # The planted tags follow the spec: re-derive them from the same generator.
    rng = np.random.default_rng(7)
    settings = {"tempo_slow": DEMO["tempo_slow"], "tempo_fast": DEMO["tempo_fast"]}
    first = demo_spec(rng, settings)
    labels = [idx.tags[j] for j in np.flatnonzero(idx.splits["train"][0].labels)]
    assert sorted(labels) == sorted(demo_tags(first, DEMO["categories"]))


def test_demo_set_is_reused_and_keyed_by_settings(tmp_path):
    a = ensure_demo_dataset(DEMO, 8000, root=tmp_path)
    stamp = (a / "complete.json").stat().st_mtime_ns
    assert ensure_demo_dataset(DEMO, 8000, root=tmp_path) == a
    assert (a / "complete.json").stat().st_mtime_ns == stamp  # not regenerated
    b = ensure_demo_dataset({**DEMO, "seed": 8}, 8000, root=tmp_path)
    assert b != a


def test_tempo_ranges_separate_the_tempo_tags():
    rng = np.random.default_rng(0)
    settings = {"tempo_slow": [70.0, 95.0], "tempo_fast": [135.0, 160.0]}
    specs = [demo_spec(rng, settings) for _ in range(200)]
    assert all(70 <= s.tempo <= 95 or 135 <= s.tempo <= 160 for s in specs)
    assert {demo_tags(s, ["tempo"])[0] for s in specs} == {"tempo---slow", "tempo---fast"}
    spec = SongSpec("saw", "rock", 120.0, 0, "minor", 1)
    assert demo_tags(spec, ["mode", "drums"]) == ["drums---rock", "mode---minor"]


def test_bad_demo_settings():
    with pytest.raises(ValueError, match="categories"):
        ensure_demo_dataset({**DEMO, "categories": ["genre"]}, 8000)
    with pytest.raises(ValueError, match="115 BPM"):
        ensure_demo_dataset({**DEMO, "tempo_slow": [70.0, 120.0]}, 8000)
    with pytest.raises(ValueError, match="at least one song"):
        ensure_demo_dataset({**DEMO, "n_valid": 0}, 8000)


def test_prepare_generates_demo_in_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VCMR_CACHE", str(tmp_path))
    cfg = {"name": "demo", "report_name": None, "root": None, "audio_root": None, "split": "x", "tagset": "x",
           "subset": "test", "sample_rate": 8000, "demo": DEMO}
    idx = build_index(prepare(OmegaConf.create({"data": cfg})).data)
    assert idx.name == "demo" and str(idx.audio_root).startswith(str(tmp_path / "demo_tagging"))
    assert len(idx.splits["train"]) == 6
