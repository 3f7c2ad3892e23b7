# The README's two commands. Each one does all set-up on a fresh machine (a .venv with the
# project installed from setup.py), then acts.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vidxai-installed
PYTHON ?= python3

.PHONY: demo test install lint clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline.apps.demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) demo_out .pytest_cache
