# Shortcuts; each target is a script or pytest call you can also run by hand.
.PHONY: quickstart test lint chart images e2e e2e-keep compose-cpu

VENV ?= .venv
PYTHON := $(VENV)/bin/python
DEV_EXTRAS := worker,convert,s3,license,api,operator,dev
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?= ghcr.io/oyez-dev

quickstart:  ## the local stack, transcribing the sample
	./scripts/quickstart.sh

test:  ## lint, type checks and the whole suite (what CI runs)
	./scripts/test.sh

lint:  ## ruff and mypy only
	OYEZ_EXTRAS=$(DEV_EXTRAS) ./scripts/dev-env.sh
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy oyez asr_worker license_proxy api_server oyez_operator

chart:  ## helm lint/template/validate tests of the chart at the repo root
	OYEZ_EXTRAS=$(DEV_EXTRAS) ./scripts/dev-env.sh
	$(PYTHON) -m pytest tests/chart -q

images:  ## build the five images locally (docker)
	docker build -f images/operator.Dockerfile -t $(REGISTRY)/operator:$(VERSION) .
	docker build -f images/api-server.Dockerfile -t $(REGISTRY)/api-server:$(VERSION) .
	docker build -f images/license-proxy.Dockerfile -t $(REGISTRY)/license-proxy:$(VERSION) .
	docker build -f images/asr-worker.Dockerfile --target cpu -t $(REGISTRY)/asr-worker-cpu:$(VERSION) .
	docker build -f images/asr-worker.Dockerfile --target gpu -t $(REGISTRY)/asr-worker:$(VERSION) .

e2e:  ## kind end-to-end: build images, helm install, CPU example CR, transcribe via port-forward, tear down
	OYEZ_EXTRAS=$(DEV_EXTRAS) ./scripts/dev-env.sh
	$(PYTHON) -m pytest -m e2e tests/e2e -v -rs -s

e2e-keep:  ## the same, leaving the kind cluster (oyez-e2e) running afterwards
	OYEZ_E2E_KEEP=1 $(MAKE) e2e

compose-cpu:  ## the stack with Docker Compose and the CPU worker (needs OYEZ_LICENSE_KEY)
	docker compose -f images/docker-compose.yml --profile cpu up -d --build --wait
