"""Search: nearest and farthest against brute force, JSON output, the HTML page, clear errors."""

from __future__ import annotations

import json
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from vcmr.audio.io import AudioDecodeError, save_audio
from vcmr.config import CONFIG_DIR, load_config
from vcmr.retrieval.embedder import Embedder
from vcmr.retrieval.html import write_page
from vcmr.retrieval.library import LibraryConfig, LibraryError, build, load_part
from vcmr.retrieval.search import SCHEMA, SearchConfig, search
from vcmr.scripts import search as search_script

sys.path.insert(0, str(Path(__file__).parent))
from retrieval_media import SAMPLE_RATE, colour_video, tiny_model, tone  # noqa: E402

VIDEOS = {"a": [0, 0, 0, 1, 1, 1], "b": [2, 2, 3, 3, 3], "c": [4, 4, 4, 4, 5, 5]}
LIB = ["progress=false", "clip_seconds=2", "min_clip_seconds=1", "scenes.short_side=32", "thumbs.short_side=32",
       "embedder.batch_size=8", "embedder.frame_batch_size=16"]


def search_cfg(library, query, *extra):
    return load_config(CONFIG_DIR / "search.yaml", [f"library={library}", f"query={query}", "progress=false", *extra],
                       SearchConfig)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("search")
    model = tiny_model(base)
    videos = base / "videos"
    videos.mkdir()
    for name, colours in VIDEOS.items():
        colour_video(videos / f"{name}.mp4", colours)
    clips = base / "clips_lib"
    build(load_config(CONFIG_DIR / "library.yaml", [*LIB, f"input={videos}", f"output={clips}", f"model={model}"],
                      LibraryConfig))
    songs = base / "songs"
    songs.mkdir()
    for i, f in enumerate([220.0, 330.0, 440.0, 550.0]):
        save_audio(songs / f"song{i}.wav", tone(2.0 + i * 0.5, SAMPLE_RATE, [f, f * 1.5]), SAMPLE_RATE)
    music = base / "music_lib"
    build(load_config(CONFIG_DIR / "library.yaml",
                      [*LIB, "kind=music", f"input={songs}", f"output={music}", f"model={model}"], LibraryConfig))
    song = base / "query.wav"
    save_audio(song, tone(3.0, SAMPLE_RATE, [300.0, 600.0, 450.0]), SAMPLE_RATE)
    return {"base": base, "model": model, "videos": videos, "clips": clips, "music": music, "song": song}


def library_vectors(root: Path, ids, key="vectors") -> np.ndarray:
    return np.concatenate([load_part(root, i)[key] for i in ids])


def test_song_query_nearest_and_farthest_equal_brute_force(setup):
    res = search(search_cfg(setup["clips"], setup["song"], "k=4", "per_window=true"))
    assert res["schema"] == SCHEMA and res["k"] == 4 and res["library"]["kind"] == "clips"
    emb = Embedder(setup["model"], progress=False).embed_audio(setup["song"])
    vectors = library_vectors(setup["clips"], "abc")
    sims = vectors @ emb.song
    order = np.argsort(-sims, kind="stable")
    assert [h["row"] for h in res["whole"]["nearest"]] == order[:4].tolist()
    assert [h["row"] for h in res["whole"]["farthest"]] == order[::-1][:4].tolist()
    np.testing.assert_allclose([h["score"] for h in res["whole"]["farthest"]], np.sort(sims)[:4], atol=1e-5)
    assert [h["rank"] for h in res["whole"]["nearest"]] == [1, 2, 3, 4]
    top = res["whole"]["nearest"][0]
    assert set(top) >= {"clip_id", "video_id", "source", "start", "end", "scene", "thumb", "score", "row"}
    assert Path(top["thumb"]).is_file() and Path(top["source"]).is_file()
    assert len(res["windows"]) == len(emb.windows) == res["query"]["n_windows"]
    for w, vec, a in zip(res["windows"], emb.windows, emb.starts):
        s = vectors @ vec
        assert w["start"] == pytest.approx(a, abs=1e-3)
        assert w["nearest"][0]["row"] == int(np.argmax(s)) and w["farthest"][0]["row"] == int(np.argmin(s))


def test_video_query_on_a_music_library(setup):
    res = search(search_cfg(setup["music"], setup["videos"] / "a.mp4", "k=2", "per_window=true"))
    assert res["query"]["kind"] == "video" and res["library"]["n_entries"] == 4
    video = Embedder(setup["model"], progress=False).embed_video(setup["videos"] / "a.mp4")
    songs = library_vectors(setup["music"], [f"song{i}" for i in range(4)], "song")
    sims = songs @ video.video
    assert [h["row"] for h in res["whole"]["nearest"]] == np.argsort(-sims)[:2].tolist()
    assert [h["song_id"] for h in res["whole"]["farthest"]] == [f"song{i}" for i in np.argsort(sims)[:2]]
    assert len(res["windows"]) == len(video.clips) == 6  # 1 s clips (the model's video context)


def test_json_output_of_the_command(setup, capsys):
    rc = search_script.main([f"library={setup['clips']}", f"query={setup['song']}", "k=3", "format=json",
                             "progress=false"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == SCHEMA and len(out["whole"]["nearest"]) == 3 and "windows" not in out
    assert out["query"]["path"] == str(setup["song"].resolve())


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag in ("img", "video", "audio", "source") and "src" in a:
            self.refs.append((tag, a["src"]))
        if tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.refs.append((tag, a.get("href") or a.get("src")))
        if tag == "a" and "href" in a:
            self.refs.append((tag, a["href"]))


@pytest.mark.parametrize("media", ["link", "copy"])
def test_html_page_is_self_contained(setup, tmp_path, media):
    res = search(search_cfg(setup["clips"], setup["song"], "k=3", "per_window=true"))
    page = write_page(res, tmp_path / "out" / "page.html", media)
    text = page.read_text()
    parser = _Refs()
    parser.feed(text)
    parser.close()
    assert "audio" in parser.tags and parser.tags.count("img") == 6 + 6 * len(res["windows"])
    assert "http://" not in text and "https://" not in text and "@import" not in text
    for tag, src in parser.refs:
        url = urlparse(src)
        assert not url.scheme and not url.netloc and not src.startswith("/"), src
        assert (page.parent / unquote(url.path)).exists(), src
    videos = [src for tag, src in parser.refs if tag == "video"]
    assert videos and all("#t=" in v for v in videos)
    first = res["whole"]["nearest"][0]
    assert f"#t={first['start']:.3f},{first['end']:.3f}" in videos[0]
    files = page.parent / "page_files"
    assert (files / "query.wav").is_symlink() == (media == "link")


def test_music_page_has_audio_players(setup, tmp_path):
    res = search(search_cfg(setup["music"], setup["videos"] / "b.mp4", "k=2"))
    page = write_page(res, tmp_path / "m.html")
    parser = _Refs()
    parser.feed(page.read_text())
    tags = [t for t, _ in parser.refs]
    assert tags.count("audio") == 4 and tags.count("video") == 1
    for _, src in parser.refs:
        assert (page.parent / unquote(urlparse(src).path)).exists()


def test_errors_name_the_problem(setup, tmp_path):
    with pytest.raises(LibraryError, match="built with model .* but the query model is"):
        search(search_cfg(setup["clips"], setup["song"], f"model={tiny_model(tmp_path, seed=3)}"))
    with pytest.raises(AudioDecodeError, match="nope.wav: file does not exist"):
        search(search_cfg(setup["clips"], tmp_path / "nope.wav"))
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 50)
    with pytest.raises(AudioDecodeError, match="bad.mp3"):
        search(search_cfg(setup["clips"], bad))
    with pytest.raises(LibraryError, match="not a library"):
        search(search_cfg(tmp_path, setup["song"]))
    # a library whose every video is unusable
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.mp4").write_bytes(b"garbage")
    empty = tmp_path / "empty_lib"
    build(load_config(CONFIG_DIR / "library.yaml", [*LIB, f"input={junk}", f"output={empty}",
                                                    f"model={setup['model']}"], LibraryConfig))
    with pytest.raises(LibraryError, match="library is empty: no usable file among 1 .*failed 1"):
        search(search_cfg(empty, setup["song"]))
    shard = tmp_path / "shard_lib"
    build(load_config(CONFIG_DIR / "library.yaml", [*LIB, f"input={setup['videos']}", f"output={shard}",
                                                    f"model={setup['model']}", "shard=0/2"], LibraryConfig))
    with pytest.raises(LibraryError, match="not assembled yet"):
        search(search_cfg(shard, setup["song"]))


def test_command_reports_errors_with_exit_status(setup, tmp_path, capsys):
    rc = search_script.main([f"library={setup['clips']}", f"query={tmp_path / 'missing.flac'}", "progress=false"])
    assert rc == 1 and "missing.flac: file does not exist" in capsys.readouterr().err
    for bad in ("kk=3", "format=xml", "k=0", "html_media=move"):
        with pytest.raises(SystemExit) as exc:
            search_script.main([f"library={setup['clips']}", "query=x.wav", bad])
        assert exc.value.code == 2
    assert "key 'format': 'xml' must be one of text, json" in capsys.readouterr().err
