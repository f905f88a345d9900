"""make_video end to end on a hand-made library: outputs, cuts on beats, constraints, errors."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

import vcmr.assembly.pipeline as P
from vcmr.assembly.beats import BeatError
from vcmr.assembly.choose import ChoiceError, Clip
from vcmr.assembly.timeline import read_timeline
from vcmr.audio.io import AudioDecodeError, load_audio
from vcmr.config import CONFIG_DIR, load_config
from vcmr.retrieval.embedder import file_sha256
from vcmr.video.scenes import SceneTracker

from .media import click_song, palette, scene_video, tiny_model

FPS = 25
SCENE = 3.0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """4 source videos x 3 flat-colour scenes of 3 s, their clips, a tiny model."""
    root = tmp_path_factory.mktemp("world")
    cols = palette(12)
    clips = []
    for v in range(4):
        src = scene_video(root / f"src{v}.mp4", cols[3 * v : 3 * v + 3], SCENE)
        for k in range(3):
            clips.append(Clip(len(clips), f"src{v}", str(src), k * SCENE, (k + 1) * SCENE, k, k * SCENE, (k + 1) * SCENE))
    model = tiny_model(root / "model.safetensors")
    return {"root": root, "clips": clips, "model": model}


def fake_library(world, clips=None, model_info=None):
    clips = world["clips"] if clips is None else clips
    vecs = np.random.default_rng(0).standard_normal((max(len(clips), 1), 8)).astype(np.float32)[: len(clips)]
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)

    def search(q, k):
        s = q @ vecs.T
        ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, ids, axis=1), ids

    info = model_info or {"path": str(world["model"]), "sha256": file_sha256(world["model"]), "embed_dim": 8}
    return P.LibraryView(path=world["root"] / "lib", clips=list(clips), search=search, model=info)


def config(tmp_path, song, **over):
    values = [f"song={song}", "library=unused", f"output={tmp_path / 'out' / 'clip.mp4'}", "progress=false",
              "render.width=64", "render.height=48", f"render.fps={FPS}", "render.preset=ultrafast",
              "render.thumb_height=24", "choose.hop=0.25", "beats.start_bpm=120"]
    values += [f"{k}={v}" for k, v in over.items()]
    return load_config(CONFIG_DIR / "make_video.yaml", values, P.MakeVideoConfig)


def use(monkeypatch, lib):
    monkeypatch.setattr(P, "open_library", lambda path: lib)


def test_make_video_end_to_end(tmp_path, world, monkeypatch):
    use(monkeypatch, fake_library(world))
    song = click_song(tmp_path / "song.wav", 120.0, 9.0, first=0.25)
    res = P.make_video(config(tmp_path, song))
    for key in ("video", "page", "timeline"):
        assert res[key].is_file(), key
    assert res["page"].name == "clip.html" and res["timeline"].parent.name == "clip_files"
    assert abs(res["tempo"] - 120.0) < 1.0 and res["n_shots"] == 4
    tl = read_timeline(res["timeline"])
    raw = json.loads(res["timeline"].read_text())
    assert raw["n_shots"] == 4 and raw["tempo"] == pytest.approx(120.0, abs=1) and raw["settings"]["seed"] == 0
    # Shots tile the song; inner boundaries are beats.
    assert tl.shots[0].start == 0.0 and tl.shots[-1].end == pytest.approx(9.0, abs=1e-3)
    for a, b in zip(tl.shots, tl.shots[1:]):
        assert a.end == b.start and np.abs(np.array(tl.beats) - b.start).min() < 1e-3
    # No clip twice, no two consecutive shots from one source, every clip inside its scene and long enough.
    ids = [s.clip_row for s in tl.shots]
    assert len(set(ids)) == len(ids)
    assert all(a.video_id != b.video_id for a, b in zip(tl.shots, tl.shots[1:]))
    clips = {c.clip_id: c for c in world["clips"]}
    for s in tl.shots:
        c = clips[s.clip_row]
        assert c.start - 1e-6 <= s.in_point and s.out_point <= c.end + 1e-6
        assert s.out_point - s.in_point == pytest.approx(s.end - s.start, abs=1e-3)
    # The video: duration, audio = song, and every cut on a shot boundary.
    with av.open(str(res["video"])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    assert abs(len(frames) / FPS - 9.0) <= 1 / FPS
    a, b = load_audio(song, 16000), load_audio(res["video"], 16000)
    n = min(a.size, b.size)
    assert np.corrcoef(a[:n], b[:n])[0, 1] >= 0.99
    tr = SceneTracker(FPS, threshold=20.0, min_scene_len=0.3)
    for i, f in enumerate(frames):
        tr.add(i, f)
    cuts = [s for s, _ in tr.finish(len(frames) / FPS).scenes[1:]]
    bounds = [s.start for s in tl.shots[1:]]
    assert len(cuts) == len(bounds)
    for cut, bnd in zip(cuts, bounds):
        assert abs(cut - bnd) <= 1 / FPS + 1e-9
    # The page points at the video and the thumbnails by relative paths that exist.
    page = res["page"].read_text()
    assert '<video id="v" controls preload="metadata" poster="clip_files/poster.jpg" src="clip.mp4">' in page
    from PIL import Image

    assert Image.open(res["page"].parent / "clip_files" / "poster.jpg").size == (64, 48)
    for s in tl.shots:
        assert s.thumbnail and (res["page"].parent / s.thumbnail).is_file() and f'src="{s.thumbnail}"' in page
    assert page.count('class="cut"') == 3 and page.count('class="down"') + page.count('class="beat"') == len(tl.beats)


def test_same_seed_same_video_and_temperature(tmp_path, world, monkeypatch):
    use(monkeypatch, fake_library(world))
    song = click_song(tmp_path / "song.wav", 120.0, 9.0, first=0.25)
    runs = []
    for seed in (1, 1, 2, 3, 4):
        res = P.make_video(config(tmp_path, song, seed=seed, **{"choose.temperature": 0.5, "choose.in_point": "start"}))
        runs.append([s.clip_row for s in read_timeline(res["timeline"]).shots])
    assert runs[0] == runs[1]
    assert len({tuple(r) for r in runs}) > 1


def test_errors_a_user_can_act_on(tmp_path, world, monkeypatch):
    song = click_song(tmp_path / "song.wav", 120.0, 9.0, first=0.25)
    use(monkeypatch, fake_library(world, clips=[]))
    with pytest.raises(ChoiceError, match="empty"):
        P.make_video(config(tmp_path, song))
    use(monkeypatch, fake_library(world, clips=world["clips"][:3]))
    with pytest.raises(ChoiceError, match=r"4 shots need 4 different clips.*allow_repeats=true"):
        P.make_video(config(tmp_path, song, **{"choose.avoid_same_source": False}))
    other = tiny_model(tmp_path / "other.safetensors", seed=1)
    use(monkeypatch, fake_library(world))
    with pytest.raises(P.LibraryMismatchError, match="built with the model"):
        P.make_video(config(tmp_path, song, model=str(other)))
    short = click_song(tmp_path / "short.wav", 120.0, 1.5, first=0.25)
    with pytest.raises(BeatError, match="short.wav.*shorter than one shot"):
        P.make_video(config(tmp_path, short))
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(AudioDecodeError, match="broken.mp3"):
        P.make_video(config(tmp_path, bad))
    with pytest.raises(ValueError, match="output"):
        P.make_video(config(tmp_path, song, output=str(tmp_path / "x.avi")))
    assert not (tmp_path / "out" / "clip.mp4").exists()


def test_with_a_built_clip_library(tmp_path, world, monkeypatch):
    """The real library reader: clips and scenes from library.sqlite, the recorded model, the index."""
    from vcmr.retrieval.library import LibraryConfig, LibraryError, build

    videos = tmp_path / "videos"
    videos.mkdir()
    for v in range(4):
        (videos / f"src{v}.mp4").symlink_to(world["root"] / f"src{v}.mp4")
    lib_dir = tmp_path / "library"
    build(load_config(CONFIG_DIR / "library.yaml", [
        "progress=false", "clip_seconds=3", "min_clip_seconds=2", "scenes.short_side=32", "thumbs.short_side=32",
        "scenes.threshold=20", f"input={videos}", f"output={lib_dir}", f"model={world['model']}"], LibraryConfig))
    view = P.open_library(lib_dir)
    assert len(view.clips) == 12 and all(c.within_scene for c in view.clips)
    assert sorted({(c.video_id, c.scene) for c in view.clips}) == [(f"src{v}", k) for v in range(4) for k in range(3)]
    song = click_song(tmp_path / "song.wav", 120.0, 9.0, first=0.25)
    cfg = config(tmp_path, song, library=str(lib_dir), **{"choose.in_point": "start"})
    res = P.make_video(cfg)
    tl = read_timeline(res["timeline"])
    assert res["n_shots"] == 4 and len({s.clip_row for s in tl.shots}) == 4
    by_id = {c.clip_id: c for c in view.clips}
    for s in tl.shots:
        c = by_id[s.clip_row]
        assert s.source == c.source and s.in_point == pytest.approx(c.start) and s.clip_id == c.name
        assert s.clip_id.startswith(s.video_id + "_c")
    other = tiny_model(tmp_path / "other.safetensors", seed=3)
    with pytest.raises(P.LibraryMismatchError, match="built with the model"):
        P.make_video(config(tmp_path, song, library=str(lib_dir), model=str(other)))
    with pytest.raises(LibraryError, match="not a library"):
        P.make_video(config(tmp_path, song, library=str(tmp_path)))


def test_command_exit_codes(tmp_path, capsys):
    from vcmr.scripts.make_video import main

    base = ["--config", str(CONFIG_DIR / "make_video.yaml"), "library=unused", f"output={tmp_path / 'v.mp4'}"]
    assert main([*base, f"song={tmp_path / 'missing.wav'}"]) == 1
    assert "missing.wav: file does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*base, "song=x.wav", "render.fps=0"])
    assert exc.value.code == 2 and "render.fps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "song=x.wav", "choose.in_point=best"])
    assert "choose.in_point" in capsys.readouterr().err
