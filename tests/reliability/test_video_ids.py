"""Video ids from file names are unique and traceable for any Unicode name
(the build of two Unicode-named files is in ``tests/preprocess/test_builder_inputs.py``)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from vcmr.data.manifest import VideoRecord, read_manifest, write_manifest
from vcmr.preprocess.download import local_video_id
from vcmr.utils import stable_hash64


def test_ids_keep_letters_of_any_script_and_stay_unique():
    assert local_video_id(Path("東京.mp4")) == "東京"
    assert local_video_id(Path("大阪.mp4")) == "大阪"
    assert local_video_id(Path("Björk/Jóga.mp4")) == "Björk__Jóga"
    # the same name in decomposed form is the same file name for a user: the same id
    assert local_video_id(Path(unicodedata.normalize("NFD", "Jóga.mp4"))) == "Jóga"
    lossy = local_video_id(Path("a b.mp4"))
    assert lossy == f"a_b-{stable_hash64('a b.mp4'):016x}" and lossy != local_video_id(Path("a_b.mp4"))
    assert local_video_id(Path("♪♪.mp4")).startswith("video-")
    assert local_video_id(Path("♪♪.mp4")) != local_video_id(Path("♫♫.mp4"))


def test_manifests_without_the_source_column_still_read(tmp_path):
    rec = VideoRecord("v", "ok", "", 10.0, 2, 5.0, 0.0, 4.0, 2, (4, 8), ("audio/v/v_00.wav",), "features/v.npy", "/x/v.mp4")
    write_manifest(tmp_path / "manifest.csv", [rec])
    assert read_manifest(tmp_path) == [rec]
    lines = (tmp_path / "manifest.csv").read_text().splitlines()
    old = [",".join(line.split(",")[:-1]) for line in lines]  # drop the source column
    (tmp_path / "manifest.csv").write_text("\n".join(old) + "\n")
    assert read_manifest(tmp_path)[0].source == ""
