# make run   — set everything up (system packages, .venv, the default model) and start Mneme
# make test  — the same set-up, then the whole test suite
# make bench — benchmarks; figures go into BENCHMARKS.md by hand, with date and machine
# make bench-flash — plain mmap vs the flash-offload policy under cgroup memory limits (root): random
#                    dense and MoE models, and a real one answering Mneme's prompt
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.mneme-installed
PYTHON ?= $(shell command -v python3.11 || command -v python3)

# llama.cpp is compiled at install. A native build uses AMX kernels on CPUs that report AMX and
# crashes on the first token there; build for a portable x86-64 level (AVX2/FMA when present).
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF $(if $(shell grep -m1 -o -w avx2 /proc/cpuinfo),-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
else
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF
endif

.PHONY: run test bench bench-flash system venv model clean screenshots
run: system venv model
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then $(VENV)/bin/mneme app; else \
	  echo "No display: starting the terminal session (mneme chat)."; $(VENV)/bin/mneme chat; fi

test: system venv model
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: system venv model
	$(PY) tests/bench/run.py $(BENCH_ARGS)
	$(PY) tests/bench/locomo.py --check
	$(PY) tests/bench/locomo.py --answers
	$(PY) tests/bench/capture_bench.py --minutes $(or $(CAPTURE_MINUTES),10)
	$(PY) tests/bench/index_bench.py $(or $(INDEX_BENCH_ARGS),--sizes 100000)

bench-flash: system venv model
	$(PY) tests/bench/flash_bench.py $(FLASH_ARGS)
	$(PY) tests/bench/flash_bench.py --moe $(FLASH_ARGS)
	$(PY) tests/bench/flash_bench.py --real --prompt answer --ctx 2048 --tokens 48 --modes plain,policy,mneme $(FLASH_ARGS)

screenshots: system venv model
	MNEME_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(PY) -m pytest -p no:cacheprovider tests/test_gui_x11.py -k screenshots

system:
	@bash packaging/system-deps.sh

venv: $(STAMP)
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Mneme needs Python 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

model: venv
	@$(VENV)/bin/mneme setup-model >/dev/null

clean:
	rm -rf $(VENV) build *.egg-info
