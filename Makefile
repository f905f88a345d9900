# One virtualenv for everything: `make demo` runs the end-to-end demo, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CUDA build of torch; it runs on CPU too. Override for another platform, e.g.
#   make setup TORCH_PIN="torch torchvision"
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-slow test-repro bench bench-gpu clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[video,dev]"
	touch $@

demo: setup
	$(PY) -m vcmr.scripts.demo

# Two pytest-xdist workers, each running whole test files (module fixtures are built once);
# TEST_WORKERS=0 runs everything in one process, TEST_WORKERS=auto one worker per core.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

# The long end-to-end learning checks (stage-2 learning on the demo videos, the packaged sentence encoder).
test-slow: setup
	$(PY) -m pytest -q -m slow

# Each published recipe (config/repro/) for a few steps on generated data (docs/reproduction.md).
test-repro: setup
	$(PY) -m pytest -q -m repro

bench: setup
	$(PY) benchmarks/bench_augment.py
	$(PY) benchmarks/bench_frames.py
	$(PY) benchmarks/bench_memory.py
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_render.py
	$(PY) benchmarks/bench_motion.py

# Training throughput on a GPU: stage-1 step (fp32, bf16-mixed, torch.compile), data supply,
# augmentation, CLIP frames/s, stage-2 step (benchmarks/bench_train.py; --quick checks it on a CPU).
bench-gpu: setup
	$(PY) benchmarks/bench_train.py --device cuda

clean:
	rm -rf $(VENV) runs .pytest_cache
