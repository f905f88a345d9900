"""The repository's video list carries VCMR's published dataset and still parses."""
from pathlib import Path

from vcmr.preprocess.download import read_inputs

REPO = Path(__file__).resolve().parents[2]


def test_video_list_has_the_vcmr_dataset():
    path = REPO / "video_list.txt"
    sources = read_inputs(path)
    ids = [s.video_id for s in sources]
    assert len(ids) == 20150
    # read_inputs keeps a repeated id once: count raw lines too, so a duplicate cannot hide.
    raw = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    raw = [ln for ln in raw if ln]
    assert len(raw) == 20150 and len(set(raw)) == 20150
    assert all(len(i) == 11 for i in ids)
    assert ids[0] == "Q4GlK9o8yIU"
    header = path.read_text().split("\n\n", 1)[0]
    assert "Format:" in header and "klean2050/VCMR" in header and "MIT License" in header
