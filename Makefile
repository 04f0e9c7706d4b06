# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip --disable-pip-version-check

.PHONY: demo test test-all bench install clean chromium mosquitto arm-toolchain

# The lock is installed with --no-deps on purpose: onnx2tf declares the 645 MB GPU TensorFlow, the lock supplies
# tensorflow-cpu instead (see docs/toolchain.md).
$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (humwatch needs Python 3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --no-deps -r requirements.lock
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/humwatch demo

# The report test renders the HTML in headless Chromium. Installing it needs root and Debian's archive; when
# that is not possible the test is skipped and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ; } || \
	  echo "note: chromium not installed; the report's browser test will be skipped"

# The fleet tests start a real MQTT broker (Debian's mosquitto, not started as a service: each test runs its own on a
# free loopback port). Installed like chromium; without it those tests are skipped and say why.
mosquitto:
	@{ command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; } || { [ "$$(id -u)" = 0 ] && \
	  command -v apt-get >/dev/null && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  mosquitto >/dev/null; } ; } || echo "note: mosquitto not installed; the fleet's broker tests will be skipped"

# The firmware test builds for a Cortex-M7 with Debian's cross compiler + newlib and runs it under QEMU; installed the
# same way (root and Debian's archive), else that test is skipped and says why.
arm-toolchain:
	@{ command -v arm-none-eabi-gcc >/dev/null 2>&1 && command -v qemu-system-arm >/dev/null 2>&1 && \
	   [ -f "$$(arm-none-eabi-gcc -mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16 -print-file-name=librdimon.a)" ]; } || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-arm-none-eabi \
	    libnewlib-arm-none-eabi qemu-system-arm >/dev/null; } ; } || \
	  echo "note: arm-none-eabi-gcc / qemu-system-arm not installed; the firmware test will be skipped"

# pytest exits 5 when a selection holds no test; that is not a failure of the suite.
test: $(STAMP) chromium mosquitto arm-toolchain
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

test-all: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

bench: $(STAMP)
	$(BIN)/python bench/frontend.py
	$(BIN)/python bench/calibration_speed.py
	$(BIN)/python bench/monitor.py
	$(BIN)/python bench/dcase.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/int8_gaussian.py
	$(BIN)/python bench/int8_gaussian.py --mask-frames 24
	$(BIN)/python bench/false_alarms.py
	$(BIN)/python bench/false_alarms.py --score gaussian --gaussian-model bench/results/cache/fleet/models-mix/gaussian --floor 3
	$(BIN)/python bench/false_alarms.py --score site-gaussian --floor 3
	$(BIN)/python bench/score_variants.py bands --floor 2.5
	$(BIN)/python bench/firmware.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info demo-out
