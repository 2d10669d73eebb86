# gemini-cli gateway — every target installs what it needs first, so a fresh clone only
# needs `make run` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock | md5sum | cut -c1-12)
PYC_OO := $(VENV)/.pyc-oo-$(shell cat requirements.lock | md5sum | cut -c1-12)
PROTOS := $(shell find proto -name '*.proto')
GEN := gen/.stamp

.PHONY: install proto pyc system-deps test test-fast run demo up down bench soak clean

install: $(STAMP) $(PYC_OO)

$(STAMP): requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	# Make the repo root and generated stubs importable from the venv, wherever it runs from.
	$(PY) -c 'import site,sys; open(site.getsitepackages()[0]+"/gemini_cli_gateway.pth","w").write("$(CURDIR)\n$(CURDIR)/gen\n")'
	rm -f $(VENV)/.installed-*
	touch $@

# The services run under python -OO (services/docstrings.py): their libraries' optimized
# bytecode, compiled once here, spares every start compiling them from source. The
# interpreter's own library is compiled where it is writable (a system Python's may not be).
$(PYC_OO): $(STAMP)
	$(PY) -m compileall -q -o 2 -j 0 "$$($(PY) -c 'import site;print(site.getsitepackages()[0])')" > /dev/null
	-$(PY) -m compileall -q -o 2 -j 0 -x 'bad_coding|badsyntax|lib2to3/tests/data|site-packages' \
		"$$($(PY) -c 'import sysconfig;print(sysconfig.get_path("stdlib"))')" > /dev/null 2>&1
	rm -f $(VENV)/.pyc-oo-*
	touch $@

proto: $(GEN)

# The services' own code compiled ahead, as they run it (-OO); compileall rewrites only what
# changed. Else each start compiles it from source, which leaves the edge ~0.7 MiB larger.
pyc: install proto
	$(PY) -m compileall -q -o 2 services gen > /dev/null

# Python stubs plus the descriptor set Envoy's grpc_json_transcoder loads.
$(GEN): $(PROTOS) $(STAMP)
	rm -rf gen && mkdir -p gen
	SITE="$$($(PY) -c 'import site;print(site.getsitepackages()[0])')" && \
	$(PY) -m grpc_tools.protoc -I proto -I "$$SITE" --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS) && \
	$(PY) -m grpc_tools.protoc -I proto -I "$$SITE" --include_imports --include_source_info \
		--descriptor_set_out=gen/upstream.pb $(PROTOS) google/rpc/error_details.proto
	touch $@

# PostgreSQL, Redis and Chromium run for real in the tests (PostgreSQL and Redis in make bench's redis and revoke phases too); apt installs them when missing.
system-deps:
	bash tests/system_deps.sh

test: install proto pyc system-deps
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install proto pyc
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

run: install proto pyc
	$(PY) -m deploy.local run

demo: install proto pyc
	$(PY) -m deploy.local demo

up:
	docker compose -f deploy/docker-compose.yml up -d --build

down:
	docker compose -f deploy/docker-compose.yml down

bench: install proto pyc system-deps
	$(PY) -m bench

# Hours of traffic in minutes: memory, descriptors, tasks and ledger under a steady mixed load.
DURATION ?= 180
CONCURRENCY ?= 32
soak: install proto pyc
	$(PY) -m bench.soak --duration $(DURATION) --concurrency $(CONCURRENCY)

clean:
	rm -rf gen $(VENV) .pytest_cache
