# The two commands of the README: `make demo` and `make test`. Both create .venv and
# install into it when needed, on a machine that has only Python and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The other supported Pythons: `make test` runs the test suite on each one found here
# (pyenv's versions or PATH, see tools/find_python.sh), each in its own .venv-X.Y.
EXTRA_PYTHONS ?= 3.12 3.13
# pytest's arguments on the extra Pythons. By default the suite without the runs of the docs'
# pages and of examples/ (tests/test_docs.py, tests/test_examples.py): those check text that is
# the same on every Python, run on .venv, and would take make test past 20 minutes on a 2-core
# CI machine. `make test-pythons PYTEST_PYTHONS_ARGS=` runs the whole suite there too.
PYTEST_PYTHONS_ARGS ?= --ignore=tests/test_docs.py --ignore=tests/test_examples.py
# 1: a missing extra Python fails `make test` instead of being skipped (CI sets it).
REQUIRE_PYTHONS ?= 0

.PHONY: install demo test lint typecheck pytest docs docs-serve bench bench-smoke clean \
	dist release-check test-pythons test-here beside-suite

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

# The test-only environment of an extra Python: .venv-3.12/.installed, .venv-3.13/.installed.
.venv-%/.installed: pyproject.toml
	@py="$$(tools/find_python.sh $*)"; \
	if [ -z "$$py" ]; then echo "no Python $* on this machine (tools/find_python.sh)" >&2; exit 1; fi; \
	echo "test -x .venv-$*/bin/python || $$py -m venv .venv-$*"; \
	test -x .venv-$*/bin/python || "$$py" -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -e ".[test,all]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/just-distribute demo

lint: $(STAMP)
	$(BIN)/ruff check just_distribute tests benchmarks examples tools
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks --smoke

# The sdist and the wheel, in dist/ (from scratch: no stale build/ or egg-info; the egg-info
# the sdist step writes is removed after, so the tree holds no second copy of the metadata).
dist: $(STAMP)
	rm -rf dist build just_distribute.egg-info
	$(BIN)/python -m build --quiet --outdir dist .
	rm -rf build just_distribute.egg-info

# dist/'s metadata (twine), contents, and a fresh install run from outside the tree.
release-check: dist
	$(BIN)/python tools/release_check.py dist

test-pythons:
	@MAKE="$(MAKE)" REQUIRE_PYTHONS=$(REQUIRE_PYTHONS) \
		tools/test_pythons.sh $(EXTRA_PYTHONS) -- $(PYTEST_PYTHONS_ARGS)

# Two things at a time, never more, on a 2-core machine: a suite mostly waits (on worker
# processes, sockets, sleeps: about 0.7 of one core), and three suites at once made
# timing-bound tests fail under load. So: lint and types; then the 3.11 suite beside the rest
# (the extra environments, docs, the benchmark smoke run, the release check: one after the
# other, into .test-pythons/beside.log, shown when done); then the 3.12 and 3.13 suites
# together (tools/test_pythons.sh).
test: lint typecheck
	@mkdir -p .test-pythons; \
	echo "=== beside the suite: the extra environments, docs, bench-smoke, release-check (.test-pythons/beside.log)"; \
	$(MAKE) --no-print-directory beside-suite >.test-pythons/beside.log 2>&1 & beside=$$!; \
	$(MAKE) --no-print-directory pytest; here=$$?; \
	wait $$beside; beside=$$?; \
	echo "=== beside the suite ($$( [ $$beside = 0 ] && echo passed || echo FAILED)): .test-pythons/beside.log"; \
	cat .test-pythons/beside.log; \
	[ $$here = 0 ] && [ $$beside = 0 ]
	@$(MAKE) --no-print-directory test-pythons

# What runs beside the 3.11 suite in `make test`.
beside-suite: $(STAMP)
	@MAKE="$(MAKE)" REQUIRE_PYTHONS=$(REQUIRE_PYTHONS) \
		tools/test_pythons.sh --environments $(EXTRA_PYTHONS)
	@$(MAKE) --no-print-directory docs bench-smoke release-check

# What `make test` runs on .venv (the extra Pythons aside), one after the other.
test-here: lint typecheck pytest docs bench-smoke release-check

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(foreach v,$(EXTRA_PYTHONS),$(VENV)-$(v)) site dist build *.egg-info \
		.test-pythons \
		.mypy_cache .ruff_cache .pytest_cache
