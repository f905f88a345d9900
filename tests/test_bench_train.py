"""benchmarks/bench_train.py: a --quick CPU run prints a positive rate for every part; bad flags fail clearly."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, List

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_train.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_train", None)


def table(text: str, title: str) -> Dict[str, List[str]]:
    """Rows of the table whose title line starts with ``title``: first cell -> the other cells
    (columns are two or more spaces apart); the header row and any note lines come along."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows: Dict[str, List[str]] = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


def rate(cell: str) -> float:
    value = float(cell.replace(",", ""))
    assert math.isfinite(value) and value > 0, cell
    return value


def test_quick_cpu_run_reports_every_part(bench: ModuleType, capsys: pytest.CaptureFixture) -> None:
    assert bench.main(["--quick", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    results = out.split(" results ", 1)[1]

    stage1 = table(results, "Stage 1 training step")
    assert rate(stage1["fp32"][1]) > 0  # ms/step, clips/s, note
    assert rate(stage1["bf16-mixed"][1]) > 0
    assert stage1["fp32 + compile"][-1].startswith("skipped")  # no --compile on cpu

    supply = table(results, "Stage 1 supply and demand")
    rate(supply["step consumes: fp32"][0])
    rate(next(v for k, v in supply.items() if k.startswith("augmentation chain"))[0])
    rate(next(v for k, v in supply.items() if k.startswith("data loader"))[0])

    clip = table(results, "CLIP ")
    rate(clip["fp32"][0])  # tower
    rate(clip["fp32"][1])  # from frames
    assert clip["fp16"][-1].startswith("skipped")
    assert "1,500 images/s on an RTX 3080" in results and "3,000" in results

    stage2 = table(results, "Stage 2 training step")
    rate(stage2["fp32"][1])  # steps/s
    rate(stage2["fp32"][2])  # videos/s


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--parts", "stage1,nope"], "--parts: unknown part"),
        (["--steps", "0"], "--steps: must be >= 1"),
        (["--batch", "1"], "--batch: must be >= 2"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_flags_exit_with_the_reason(
    bench: ModuleType, capsys: pytest.CaptureFixture, argv: List[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no GPU is visible")
def test_cuda_without_gpu_says_so(bench: ModuleType, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--device", "cuda"])
    assert "no CUDA GPU is visible here" in capsys.readouterr().err


def test_bad_config_override_names_the_key(bench: ModuleType, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--parts", "stage1", "--mus-set", "optim.nosuch=1"])
    assert exc.value.code == 2
    assert "optim.nosuch" in capsys.readouterr().err
