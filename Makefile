# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
DEMO_DIR ?= runs/demo

.PHONY: demo test lint venv clean experiment gpu-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,cpu,int8,dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m mtlkd.demo --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

experiment: $(STAMP)
	$(BIN)/python scripts/experiment.py

# On a machine with an NVIDIA GPU: export fp32/fp16/int8 engines, compare them with PyTorch, run the
# Predictor through TensorRT and ONNX Runtime CUDA, time MTL vs STL. Without a GPU: one line, exit 0.
# No install step: the GPU install is `pip install -e '.[train,gpu]'` (the cpu extra's onnxruntime would
# shadow onnxruntime-gpu), so it uses .venv as it is, or $(PY).
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY)) scripts/gpu_check.py

clean:
	rm -rf runs .pytest_cache
