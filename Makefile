# The two commands a newcomer needs (see README): `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test install vendor

$(BIN)/flask: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/flask

install: $(BIN)/flask

## Run the demo: SQLite, in-process queue, a seeded demo store, messages to the Outbox. Its links point at
## http://HOST:PORT unless SHOPIFY_APP_URL is set.
run: install
	HOST=$(HOST) PORT=$(PORT) KINNEKT_DEMO=1 $(BIN)/flask --app app demo run --host $(HOST) --port $(PORT)

## Run the whole test suite on SQLite and on PostgreSQL (with Redis and Chromium).
test: install
	bash scripts/test.sh

## Re-fetch the pinned front-end assets from the npm registry into static/vendor/.
vendor:
	bash scripts/vendor_assets.sh
