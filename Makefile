# Two commands for a new user: `make train` and `make test`; each sets the project up first if it is not yet.
# Extra arguments go through ARGS, e.g. make train ARGS="experiment=smoke" or make test ARGS="-k engine".
VENV := .venv
PYTHON := $(VENV)/bin/python

.PHONY: setup train smoke test study

# The set-up: a virtual environment with the project, its dev and Spark extras, torch pinned to the CPU wheel.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[dev,spark]"
	touch $@

setup: $(VENV)/.installed

train: setup  ## the default model on CoNLL-2003, tracked in ./mlruns
	$(PYTHON) -m ner.train $(ARGS)

smoke: setup  ## the whole pipeline in seconds (200 sentences, 2 epochs: the model finds no entities yet)
	$(PYTHON) -m ner.train experiment=smoke $(ARGS)

test: setup  ## lint, then every test (-rs: why each skipped test skipped)
	$(VENV)/bin/ruff check .
	$(PYTHON) -m pytest -q -rs $(ARGS)

study: setup  ## the cell x direction study: 18 runs x 10 epochs on CoNLL-2003, two at a time (32 min here); ARGS="--epochs 20" for ~1 h
	$(PYTHON) -m pipelines.study $(ARGS)
