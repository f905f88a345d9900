"""Per-video features of a builder output, cached in ``<input>/feature_cache/<kind>/``.

    python -m vcmr.scripts.extract_features                  # demo dataset: vmnet_audio, vmnet_video, clip_audio
    python -m vcmr.scripts.extract_features --config config/extract_features.yaml \
        input=<builder output> kind=vmnet_audio,vmnet_video,clip_audio
    python -m vcmr.scripts.extract_features --config config/extract_features.yaml \
        input=<builder output> kind=stage2_audio features.stage2_audio.model=<stage-2 export>

Resumable: a second run only does the videos not cached yet. See docs/seed_models.md.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from vcmr.config import CONFIG_DIR, load_cli_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vcmr.demo.features import prepare_extraction
    from vcmr.preprocess.features import ExtractFeaturesConfig, run

    cfg = load_cli_config(argv, str(CONFIG_DIR / "extract_features_demo.yaml"), ExtractFeaturesConfig)
    summaries = run(prepare_extraction(cfg))
    for s in summaries:
        print(f"  {s.kind:<14}{s.folder}")
    return 1 if any(s.failures for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
