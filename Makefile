# Two-command setup: `make run` (the main job) and `make test` (the suite).
# Both create or reuse the virtual environment in .venv and install the pinned versions.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test bench scaling

$(STAMP): setup.py constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m qwen_audio_jax.main

# Two xdist workers (one per core of the CI machine), whole files per worker; TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

bench: $(STAMP)
	$(PY) -m bench.run

# README "Scaling" table: one `python -m qwen_audio_jax.plan` per row (true TPU compiles need `pip install -e .[tpu]`)
scaling: $(STAMP)
	$(PY) -m bench.scaling
