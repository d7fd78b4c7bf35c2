# Two commands matter: `make run` (local stack) and `make test` (everything CI checks).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
export AWS_DEFAULT_REGION ?= ap-shanghai
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

.PHONY: run test venv lint format typecheck unit integration e2e browser bench package cfn-lint deploy clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

run: venv
	$(BIN)/python -m devtools.stack

test: venv lint typecheck
	$(BIN)/python -m devtools.ensure_browser
	$(PYTEST) tests -n 2 --dist loadfile --cov --cov-report=term --cov-fail-under=85
	$(MAKE) --no-print-directory cfn-lint

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(PYTEST) tests/unit

integration: venv
	$(PYTEST) tests/integration

e2e: venv
	$(PYTEST) tests/e2e

browser: venv
	$(BIN)/python -m devtools.ensure_browser
	$(PYTEST) tests/browser

bench: venv
	$(BIN)/python -m bench

package: venv
	bash infra/package.sh

cfn-lint: package

deploy: package
	@echo "Deploy the packaged template with your AWS credentials (see README, 'Deploy'):"
	@echo "  aws cloudformation package --template-file build/package/sam.json --s3-bucket <bucket> --output-template-file build/packaged.yaml"
	@echo "  aws cloudformation deploy --template-file build/packaged.yaml --stack-name fenxiao-prod --capabilities CAPABILITY_IAM"

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .coverage
