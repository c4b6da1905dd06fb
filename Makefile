# Two commands: `make test` and `make demo`. Each does all of its own set-up in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is pinned here, not in setup.cfg: timm needs a torchvision built for the same torch, and
# torch 2.14.1 + torchvision 0.29.1 are the pair measured to work together on our machines.
# Override for your hardware, e.g. `make test TORCH_SPEC="torch==2.13.0"` (without timm tests) or
# a CUDA index of your choice; an already-created .venv is reused as it is.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: test demo venv clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.installed
	@echo "The offline demo fine-tune is not built yet (issue 7); run 'make test' meanwhile." && exit 1

clean:
	rm -rf $(VENV) build *.egg-info
