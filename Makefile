# Two entry points: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.pixcore-installed
PLUGINS := pixcore-timm pixcore-seg pixcore-depth pixcore-normals
PYTEST_ARGS ?=
WHEELHOUSE ?= dist/wheelhouse

.PHONY: install demo test bench wheels clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(foreach p,$(PLUGINS),plugins/$(p)/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		-e '.[test,export,shards]' $(foreach p,$(PLUGINS),-e plugins/$(p))
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pixcore demo

LINTED := core plugins tests benchmarks
TYPED  := core/pixcore $(foreach p,$(PLUGINS),plugins/$(p)/src)

test: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy $(TYPED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b; done

# Wheels of pixcore and the four plugins in one folder, so that pip resolves them by name:
#   pip install -c constraints.txt --find-links dist/wheelhouse pixcore pixcore-depth
# Only pip and a build backend are needed (no torch). Old build/ folders go first: setuptools
# would copy files deleted since their last build into the new wheels.
wheels:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -rf $(WHEELHOUSE) build $(foreach p,$(PLUGINS),plugins/$(p)/build)
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check --no-deps \
		--wheel-dir $(WHEELHOUSE) ./ $(foreach p,$(PLUGINS),./plugins/$(p))
	ls $(WHEELHOUSE)

clean:
	rm -rf $(VENV) pixcore-demo build dist *.egg-info
