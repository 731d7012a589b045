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

# checkov scans the prod manifests in the tests; its pins clash with the program's, so it lives apart.
CHECKOV_VENV ?= .venv-checkov
$(CHECKOV_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet checkov==3.3.30
	touch $@

# mypy runs twice: the policy pack's policy/__main__.py cannot share a run with the program's __main__.py.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy policy/__main__.py

test: lint $(CHECKOV_VENV)/.installed
	CHECKOV=$(CHECKOV_VENV)/bin/checkov $(VENV)/bin/python -m pytest

# Dev stack on the local Docker engine, with state in a local file backend (no Pulumi Cloud).
PULUMI_BACKEND_URL ?= file://~/.pulumi-nativelink-juicefs
export PULUMI_BACKEND_URL

.PHONY: dev-up dev-down dev-tools
# Say what is missing, and where to get it, before make would fail on a bare `pulumi: not found`.
dev-tools:
	@command -v pulumi >/dev/null || { echo "The Pulumi CLI is missing: install it (https://www.pulumi.com/docs/install/)." >&2; exit 1; }
	@command -v docker >/dev/null || { echo "Docker is missing: install Docker Engine (https://docs.docker.com/engine/install/)." >&2; exit 1; }

dev-up: dev-tools
	mkdir -p $(HOME)/.pulumi-nativelink-juicefs
	pulumi stack select --create dev --secrets-provider passphrase
	pulumi up --stack dev

dev-down: dev-tools
	pulumi destroy --stack dev
