"""The end-to-end demo on generated data (CPU, a few minutes per stage).

    python -m vcmr.scripts.demo                    # stage 1 -> builder -> stage 2 -> stage 3
    python -m vcmr.scripts.demo --output runs/demo --stage3-mode mlp   # frozen encoder + MLP head
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="runs/demo", help="parent folder of the run folders")
    parser.add_argument("--stage3-mode", default="finetune", choices=["linear", "mlp", "finetune"])
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every stage")
    args = parser.parse_args(argv)
    from vcmr.demo.pipeline import run_demo

    run_demo(args.output, args.stage3_mode, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
