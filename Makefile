# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint venv clean

venv: $(STAMP)

# torch is installed first and pinned: 2.13.0 is the CPU build; any other request pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The live demo: simulator + decoding daemon (adapting) + dashboard on http://127.0.0.1:8000/.
# The demo model is trained on the first run (about a minute) and cached in artifacts/demo/.
demo: $(STAMP)
	$(VENV)/bin/bci demo --live --cache artifacts/demo

# The dashboard tests drive Debian's chromium; installed here when missing (needs root).
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Four workers on any core count: most tests wait on real-time streams, not on the CPU.
# Tests that assert real-time deadlines (marked solo) then run alone, collected from their
# own files only.
# pytest caches its assertion-rewritten modules as bytecode: where the environment says not to
# write bytecode (PYTHONDONTWRITEBYTECODE), each pytest process would rewrite them all again.
test: export PYTHONDONTWRITEBYTECODE :=
test: $(STAMP) $(CHROMIUM)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 4 -m "not solo"
	$(PY) -m pytest -m solo $$(grep -rl --include='test_*.py' 'pytest.mark.solo' tests)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache
