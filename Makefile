# `make test` is the one test command: README and CI run exactly this.
VENV ?= .venv
PYTHON ?= python3

.PHONY: test lint install

$(VENV)/.installed: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# mypy runs twice: the policy pack's policy/__main__.py cannot share a run with the program's __main__.py.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy policy/__main__.py

test: lint
	$(VENV)/bin/python -m pytest

# Dev stack on the local Docker engine, with state in a local file backend (no Pulumi Cloud).
PULUMI_BACKEND_URL ?= file://~/.pulumi-nativelink-juicefs
export PULUMI_BACKEND_URL

.PHONY: dev-up dev-down
dev-up:
	mkdir -p $(HOME)/.pulumi-nativelink-juicefs
	pulumi stack select --create dev --secrets-provider passphrase
	pulumi up --stack dev

dev-down:
	pulumi destroy --stack dev
