# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_DIR := /usr/share/datasets/fashion-mnist
CIFAR10_JPEG := ../shared/datasets/cifar10-jpeg.tar.gz
DEMO_RUN := runs/demo

.PHONY: setup demo test fuzz bench lint fashion-mnist cifar10 chromium clean

setup: $(VENV)/.installed fashion-mnist cifar10 chromium

# torch and torchvision are pinned in pyproject.toml: other versions download gigabytes here.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

fashion-mnist:
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
		echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'"; \
	fi

# The report test opens report.html in headless Chromium; without it that one test is skipped.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Chromium (Debian package chromium) for the report test"; \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
			|| echo "could not install Chromium: the report test will be skipped"; \
	else \
		echo "Chromium is missing, the report test will be skipped: run 'sudo apt-get install chromium'"; \
	fi

# Decode the CIFAR-10 JPEG archive into convscope's cache once, as the named data set `cifar10`.
cifar10: $(VENV)/.installed
	@if [ -f $(CIFAR10_JPEG) ] && ! $(BIN)/convscope data list | grep -q '^cifar10 .*cached'; then \
		echo "importing CIFAR-10 from $(CIFAR10_JPEG)"; \
		$(BIN)/convscope data import cifar10 $(CIFAR10_JPEG); \
	fi

demo: setup
	rm -rf $(DEMO_RUN)
	$(BIN)/convscope train --recipe fashion-mnist --out $(DEMO_RUN)
	$(BIN)/convscope evaluate $(DEMO_RUN)
	@echo "plots:"; ls $(DEMO_RUN)/plots/*.png

test: setup
	$(BIN)/python -m pytest

# The fuzz tests with 50 times the inputs of `make test` (a few minutes); the last line counts the inputs tried.
fuzz: $(VENV)/.installed
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/test_fuzz.py

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs

bench: setup
	$(BIN)/convscope bench demo-fashion
	$(BIN)/convscope bench fashion-mnist-5min
	$(BIN)/convscope bench cifar10
	$(BIN)/convscope bench seed004-selu
	$(BIN)/convscope bench seed003-cifar
	$(BIN)/convscope bench spanish-names
	$(BIN)/convscope bench explain
	$(BIN)/convscope bench transfer
	$(BIN)/convscope bench weakseg
	$(BIN)/convscope bench cifar10-weakseg
	$(BIN)/convscope bench splitbrain
	$(BIN)/convscope bench own-photos
	$(BIN)/convscope bench speed-fashion
	$(BIN)/convscope bench speed-cifar10
