"""Decode the audio of a tagging dataset once into a cache (mono, ``data.sample_rate``).

Same config and overrides as stage 3; only the ``data`` block is used::

    python -m vcmr.scripts.tagging_cache --config config/supervised.yaml \\
        data.name=magnatagatune data.root=<dir> data.cache.dir=<cache dir>
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from vcmr.config import load_cli_config


def main(argv: Optional[Sequence[str]] = None):
    from vcmr.data.tagging import build_index, cache
    from vcmr.demo.tagging import prepare
    from vcmr.preprocess.tagging_cache import build_cache
    from vcmr.trainers.supervised import SupervisedConfig

    args = list(argv if argv is not None else sys.argv[1:])
    if not any(a.startswith("model.audio_init=") for a in args):
        args.append("model.audio_init=scratch")  # required by the stage-3 config, unused here
    data = prepare(load_cli_config(args, "supervised.yaml", SupervisedConfig)).data
    if data.cache.dir is None:
        sys.exit("config error: data.cache.dir is null; set data.cache.dir=<folder for the cache>")
    report = build_cache(build_index(data), data.cache.dir, int(data.sample_rate), str(data.cache.format),
                         int(data.cache.num_workers))
    print(report.summary())
    for rel, why in list(report.failed.items())[:20]:
        print(f"  failed: {rel}: {why}")
    if len(report.failed) > 20:
        print(f"  ... {len(report.failed) - 20} more in {Path(data.cache.dir) / cache.CACHE_FAILED}")
    return report


if __name__ == "__main__":
    main()
