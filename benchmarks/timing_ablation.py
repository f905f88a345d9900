"""Timing ablation of the UT-CMVMR matcher: content only, + rhythm, + motion, + both.

On the generated timing set (:mod:`vcmr.demo.timing`: music and video differ only in when
beats and motion bursts happen; several videos share one song), the ``ut_cmvmr`` recipe of
the retrieval trainer is trained once per variant and seed, and every validation video is
ranked against the music gallery (one embedding per song, many-to-one). Prints the table
written to ``<output>/ablation.md`` (the one in docs/rhythm_motion.md).

    python benchmarks/timing_ablation.py                        # config/timing_ablation.yaml
    python benchmarks/timing_ablation.py seeds=[0] dataset.n_songs=20
"""

from __future__ import annotations

import sys
import time
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vcmr.config import CONFIG_DIR, load_cli_config
    from vcmr.demo.timing import TimingAblationConfig, run_ablation

    cfg = load_cli_config(argv, str(CONFIG_DIR / "timing_ablation.yaml"), TimingAblationConfig)
    t0 = time.perf_counter()
    results = run_ablation(cfg)
    print(f"\nTiming ablation: {results['n_queries']} video queries, music gallery of {results['n_songs']} songs, "
          f"{results['score']} scores, mean over seeds {results['seeds']} ({time.perf_counter() - t0:.0f} s)\n")
    print(results["table"])
    print(f"\n  results   {cfg.output}/ablation.json\n  table     {cfg.output}/ablation.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
