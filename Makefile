# Two commands matter: `make run` (local stack) and `make test` (everything CI checks).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.lock | sha1sum | cut -c1-12)
RUN_STAMP := $(VENV)/.run-$(shell cat requirements-local.lock | sha1sum | cut -c1-12)
export AWS_DEFAULT_REGION ?= ap-shanghai
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

.PHONY: run reset test venv run-venv lint format typecheck rules-coverage unit integration e2e browser bench load audit-verify backfill recount package cfn-lint deploy lock client clean

# The venv installs the hashed lock, never the loose pins: `make lock` after editing requirements*.txt.
$(STAMP): requirements-dev.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

# `make run` needs only the runtime, the local API server and the AWS SDK (requirements-local.lock);
# the test tools (pytest, Playwright, schemathesis, linters) come with `make test`.
$(RUN_STAMP): requirements-local.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements-local.lock
	@rm -f $(VENV)/.run-* && touch $(RUN_STAMP)

run-venv: $(RUN_STAMP)

# requirements.txt (runtime) and requirements-dev.txt are the human-edited inputs; the locks pin
# every transitive dependency with hashes. The runtime lock is resolved inside the dev lock, so the
# Lambda package and the tests run the same versions. Python 3.11 = the Lambda runtime chalice picks.
LOCK := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock"
lock: venv
	$(LOCK) requirements-dev.txt -o requirements-dev.lock
	$(LOCK) -c requirements-dev.lock requirements.txt -o requirements.lock
	$(LOCK) -c requirements-dev.lock requirements-local.txt -o requirements-local.lock

run: run-venv
	$(BIN)/python -m devtools.stack

# Wipe the local stack's data and seed the demo again (stop `make run` first).
reset: run-venv
	$(BIN)/python -m devtools.stack --reset

test: venv lint typecheck
	$(BIN)/python -m devtools.ensure_browser
	$(PYTEST) tests -n 2 --dist loadfile --cov --cov-report=term --cov-fail-under=85
	$(MAKE) --no-print-directory rules-coverage
	$(MAKE) --no-print-directory cfn-lint

# The pure rule modules are covered to every branch by their own unit tests (STYLE.md, "Tests").
RULES := referral commission settlement withdrawal money ledger
RULE_TESTS := $(wildcard $(foreach m,referral commission settlement withdrawal ledger report_counters,tests/unit/test_$(m)*.py))
rules-coverage: venv
	$(PYTEST) -q $(RULE_TESTS) $(foreach m,$(RULES),--cov=chalicelib.$(m)) --cov-branch \
		--cov-report=term-missing --cov-fail-under=100

# mypy: strict on app.py and chalicelib/, loosely on tests/, infra/, devtools/ and bench/ (pyproject.toml)
lint: venv typecheck
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

# The mini-program client (clients/miniprogram): types from /v1/openapi.json (openapi-typescript) and the
# error texts from its table; commit clients/miniprogram/src after a route or model change.
client: venv
	$(BIN)/python clients/miniprogram/generate.py build/miniprogram/openapi.json clients/miniprogram/src/errors.ts
	cd clients/miniprogram && { test -d node_modules || npm ci --no-audit --no-fund; } && npm run --silent generate

bench: venv
	$(BIN)/python -m bench

# 5,000 promoters and 10,000 orders over HTTP against a stack of its own (PROMOTERS=, ORDERS= to resize)
load: venv
	$(BIN)/python -m bench.load $(if $(PROMOTERS),--promoters $(PROMOTERS)) $(if $(ORDERS),--orders $(ORDERS))

# Recompute the audit trail's hashes, chains and seals: every tenant of `make run`'s stack, the
# last 7 days (TENANT=, FROM=, TO= narrow it; in AWS set TABLE_PREFIX and credentials instead).
audit-verify: run-venv
	$(BIN)/python -m devtools.audit verify --local \
		$(if $(TENANT),--tenant $(TENANT)) $(if $(FROM),--from $(FROM)) $(if $(TO),--to $(TO))

# Orders written before the `listed` and `sold` indexes get their keys (every tenant of `make run`'s
# stack, or TENANT=; DRY_RUN=1 only counts). Running it again sets nothing.
backfill: run-venv
	$(BIN)/python -m devtools.backfill --local $(if $(TENANT),--tenant $(TENANT)) $(if $(DRY_RUN),--dry-run)

# The report counters rebuilt from what they count: prints what differs (FIX=1 repairs it, audited).
recount: run-venv
	$(BIN)/python -m devtools.recount --local $(if $(TENANT),--tenant $(TENANT)) $(if $(FIX),--fix)

package: venv
	STAGE=$(STAGE) bash infra/package.sh

cfn-lint: package

# make deploy STAGE=prod REGION=cn-north-1 BUCKET=<artifacts bucket> PUBLIC_BASE_URL=https://api.example.com
#   [STACK=fenxiao-prod] [ALARM_EMAIL=ops@example.com]   (infra/README.md, "Deploy")
# Checks its parameters and the aws CLI before anything runs, then packages, uploads and deploys.
STAGE ?= prod
STACK ?= fenxiao-$(STAGE)
PACKAGED := build/packaged-$(STAGE).yaml
need = $(if $($(1)),,$(error make deploy: $(1) is required ($(2)); see infra/README.md, "Deploy"))
CFN = aws cloudformation --region $(REGION)
deploy:
	$(call need,REGION,the AWS region to deploy to: cn-north-1, cn-northwest-1, ap-east-1, ...)
	$(if $(filter ap-shanghai,$(REGION)),$(error make deploy: REGION=ap-shanghai is the local stack's placeholder, not an AWS region))
	$(call need,BUCKET,an S3 bucket in $(REGION) for the code zip and the template)
	$(call need,PUBLIC_BASE_URL,the API's public https:// base URL)
	$(if $(filter https://%,$(PUBLIC_BASE_URL)),,$(error make deploy: PUBLIC_BASE_URL must start with https://))
	$(if $(wildcard infra/merge-$(STAGE).json),,$(error make deploy: no infra/merge-$(STAGE).json for STAGE=$(STAGE)))
	$(if $(ALARM_EMAIL),$(if $(findstring @,$(ALARM_EMAIL)),,$(error make deploy: ALARM_EMAIL=$(ALARM_EMAIL) is not an email address)))
	@command -v aws >/dev/null || { echo "make deploy: the aws CLI is not on PATH (infra/README.md, 'Tools')" >&2; exit 1; }
	@aws sts get-caller-identity --region $(REGION) --query Arn --output text
	$(PYTHON) infra/preflight.py infra/merge-$(STAGE).json --region $(REGION)
	$(MAKE) --no-print-directory package STAGE=$(STAGE) AWS_DEFAULT_REGION=$(REGION)
	$(CFN) package --template-file build/package/sam.json --s3-bucket $(BUCKET) --s3-prefix $(STACK) \
		--output-template-file $(PACKAGED)
	$(CFN) deploy --template-file $(PACKAGED) --stack-name $(STACK) --s3-bucket $(BUCKET) --s3-prefix $(STACK) \
		--capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --no-fail-on-empty-changeset \
		--parameter-overrides PublicBaseUrl=$(PUBLIC_BASE_URL)
	$(if $(ALARM_EMAIL),aws sns subscribe --region $(REGION) --protocol email --notification-endpoint $(ALARM_EMAIL) \
		--topic-arn "$$($(CFN) describe-stacks --stack-name $(STACK) --output text \
		--query "Stacks[0].Outputs[?OutputKey=='AlarmTopicArn'].OutputValue")")
	$(CFN) describe-stacks --stack-name $(STACK) --query "Stacks[0].Outputs" --output table

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .coverage
