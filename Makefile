# clipkt: `make demo` runs the pipeline on the bundled demo data, `make test` runs the tests.
# Both create the virtual environment (.venv) first when it is missing or pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DAGSTER_HOME := $(CURDIR)/data/dagster_home
export CLIPKT_CACHE_ROOT ?= $(CURDIR)/data/cache

.PHONY: demo seed000 denseav speechclip ccl test data ui clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml:  # the local instance: SQLite storage under data/dagster_home, no telemetry
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

# the demo's CLIP teacher: a tiny open_clip model fitted on SynthAV (no pretrained weights offline);
# `CLIPKT_TEACHER=open_clip make ui` uses ViT-B-32/openai (or CLIPKT_TEACHER_WEIGHTS) instead
demo seed000 denseav speechclip ccl ui: export CLIPKT_TEACHER ?= tiny

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m pipelines.demo

seed000: $(STAMP) $(DAGSTER_HOME)/dagster.yaml  ## seed 000's three-seed set on SynthAV Places (about an hour)
	$(BIN)/python -m pipelines.demo --tag s000_places

denseav: $(STAMP) $(DAGSTER_HOME)/dagster.yaml  ## DenseAV (seed 004) vs the global baseline, 3 seeds, with localisation
	$(BIN)/python -m pipelines.demo --tag denseav

speechclip: $(STAMP) $(DAGSTER_HOME)/dagster.yaml  ## cascaded SpeechCLIP (seed 003): parallel, cascaded with and without BatchNorm, both; 3 seeds, keyword reports
	$(BIN)/python -m pipelines.demo --tag speechclip

ccl: $(STAMP) $(DAGSTER_HOME)/dagster.yaml  ## CCL (seed 002): supervised, InfoNCE, CCL with one and two teachers; 3 seeds
	$(BIN)/python -m pipelines.demo --tag ccl

test: $(STAMP)
	$(BIN)/python -m pytest -q

data: $(STAMP)  ## only (re)generate the demo dataset
	$(BIN)/python -m data.synthav --out data/demo --if-missing

ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml  ## the Dagster UI on http://127.0.0.1:3000, with the demo's runs
	$(BIN)/dagster dev -w workspace.yaml

clean:  ## remove generated data, caches and the local Dagster instance (not the venv)
	rm -rf data/demo data/cache data/dagster_home data/reports
