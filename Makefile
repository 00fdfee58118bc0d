# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
DEMO_DIR ?= runs/demo
# mtl-serve's Triton server (the nvidia-pytriton wheel) pins numpy<2, mtlkd's main environment has numpy 2:
# it gets an environment of its own, with the runtime (onnxruntime, openvino) and no torch. See mtlkd/serve/.
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test test-numerics lint venv serve-env clean experiment gpu-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,cpu,int8,dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

$(SERVE_STAMP): pyproject.toml
	test -x $(SERVE_VENV)/bin/python || $(PY) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install --quiet -e '.[cpu,serve]'
	rm -f $(SERVE_VENV)/.installed-* && touch $(SERVE_STAMP)

serve-env: $(SERVE_STAMP)

demo: $(STAMP)
	$(BIN)/python -m mtlkd.demo --out $(DEMO_DIR)

# The suite, then its numerically sensitive tests (marker `numerics`) again with the kernels another CPU would
# run: MKL held to AVX2 (no AVX-512, no AMX) and ONNX Runtime at its basic graph optimisations.
test: $(STAMP) $(SERVE_STAMP)
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-numerics

test-numerics: $(STAMP) $(SERVE_STAMP)
	MKL_ENABLE_INSTRUCTIONS=AVX2 MTLKD_ORT_OPTIMIZATION=basic $(BIN)/python -m pytest -q -m numerics

lint: $(STAMP)
	$(BIN)/ruff check .

experiment: $(STAMP)
	$(BIN)/python scripts/experiment.py

# On a machine with an NVIDIA GPU: torch on CUDA at fp32/TF32/bf16/fp16 (eager and CUDA graphs), MTL vs 3 STL
# with CUDA events, the Predictor on CUDA vs the CPU, and TensorRT / ONNX Runtime CUDA where installed (rows
# say "not installed" otherwise). Without a GPU: one line, exit 0. No install step: it runs the checkout in
# place with .venv's python or $(PY) (a GPU machine's own torch); the GPU install is `pip install -e
# '.[train,gpu]'` (the cpu extra's onnxruntime would shadow onnxruntime-gpu).
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY)) scripts/gpu_check.py

clean:
	rm -rf runs .pytest_cache
