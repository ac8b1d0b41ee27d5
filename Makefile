# make install: .venv with exactly the locked versions (requirements/host.txt: every direct and
# transitive dependency of the host and dev extras, with hashes), then edgerob itself, editable.
# The lock pins the CPU build of torch (torch==2.13.0+cpu, this machine's local wheel in
# /opt/wheels): PyPI's plain torch is the multi-GB CUDA build. make lock refreshes the lock files;
# README "Installing" says how to upgrade one dependency and how a device (Jetson) installs.
PYTHON ?= python3
VENV ?= .venv
LOCK_VENV ?= .venv-lock
PIP = $(VENV)/bin/pip
PY = $(VENV)/bin/python
STAMP = $(VENV)/.installed
LOCKS = requirements/host.txt requirements/no-deps.txt
# Passed to pip-compile when refreshing, e.g. make lock UPGRADE="--upgrade-package optuna"
UPGRADE ?=

.PHONY: install lock demo test clean

install: $(STAMP)

# --no-deps everywhere: the lock is the whole set, nothing is resolved at install time.
# torchattacks 3.5.1 pins torchvision and requests~=2.25.1 but imports neither (only scipy and
# tqdm, which the host extra brings): requirements/no-deps.txt holds it, hashed, without its pins.
# --no-build-isolation: the build backend (hatchling) is in the lock too.
$(STAMP): pyproject.toml Makefile $(LOCKS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps $(addprefix -r ,$(LOCKS))
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) \
	  && $(LOCK_VENV)/bin/pip install --quiet pip-tools==7.6.2 uv==0.13.9; }
	$(LOCK_VENV)/bin/pip-compile --quiet pyproject.toml --extra host --extra dev \
	  --constraint requirements/torch-cpu.txt --generate-hashes --all-build-deps \
	  --strip-extras --allow-unsafe $(UPGRADE) --output-file requirements/host.txt
	rm -rf $(LOCK_VENV)/no-deps && $(LOCK_VENV)/bin/pip download --quiet --no-deps \
	  --only-binary :all: --dest $(LOCK_VENV)/no-deps -r requirements/no-deps.in
	{ echo "# make lock: installed with --no-deps (see Makefile)"; \
	  for w in $(LOCK_VENV)/no-deps/*.whl; do \
	    n=$$(basename $$w | cut -d- -f1-2 | sed 's/-/==/'); \
	    echo "$$n --hash=sha256:$$(sha256sum $$w | cut -d' ' -f1)"; done; } > requirements/no-deps.txt
	# device side: the core (and jetson extra) for JetPack's Python 3.10 on aarch64, from PyPI
	$(LOCK_VENV)/bin/uv pip compile --quiet --no-config --index-url https://pypi.org/simple \
	  pyproject.toml --extra jetson --python-version 3.10 --python-platform aarch64-manylinux_2_31 \
	  --generate-hashes --no-emit-index-url --output-file requirements/device.txt

demo: install
	$(VENV)/bin/edgerob profile --target cpu --profile quick

test: install
	$(VENV)/bin/lint-imports  # the architecture's import rules (pyproject.toml)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) $(LOCK_VENV) edgerob.db .pytest_cache
