# make install: .venv with the project and everything the tests need.
# torch is installed first, pinned, so pip takes the CPU build where one is on the index or the
# local wheel cache instead of resolving plain `torch` to the multi-GB CUDA build. On a machine
# whose pip does not have the CPU wheel, point TORCH_INDEX at PyTorch's CPU index:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PIP = $(VENV)/bin/pip
PY = $(VENV)/bin/python
STAMP = $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple)
	$(PIP) install --quiet -e ".[host,dev]"
	# torchattacks 3.5.1 pins torchvision and requests~=2.25.1 but imports neither (only scipy and
	# tqdm, which the host extra brings): --no-deps keeps those stale pins out.
	$(PIP) install --quiet --no-deps "torchattacks==3.5.1"
	touch $(STAMP)

demo: install
	$(VENV)/bin/edgerob profile --target cpu --profile quick

test: install
	$(VENV)/bin/lint-imports  # the architecture's import rules (pyproject.toml)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) edgerob.db .pytest_cache
