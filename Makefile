# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# mandoc lints the man pages (tests/test_docs.py), ripgrep is the baseline of
# bench/ask.py, whose smoke test runs in the suite, and openssh-server's sshd
# (with ssh) carries the remote-shard tests (tests/sshd.py); under CI=true all
# are required.
.PHONY: deps-apt
deps-apt:
	command -v mandoc >/dev/null && command -v rg >/dev/null && command -v ssh >/dev/null && test -x /usr/sbin/sshd || (apt-get update -qq && apt-get install -y -qq mandoc ripgrep openssh-client openssh-server)

test: $(STAMP) deps-apt lint
	$(BIN)/pytest -q

demo: $(STAMP)
	examples/demo.sh

# ripgrep is bench/ask.py's baseline: what an agent without ifmem runs for every question.
.PHONY: bench-setup
bench-setup:
	command -v rg >/dev/null || (apt-get update -qq && apt-get install -y -qq ripgrep)

bench: $(STAMP) bench-setup
	$(BIN)/python bench/eventlog.py
	$(BIN)/python bench/ask.py
	$(BIN)/python bench/watch.py

# Installable artifacts into dist/ (packaging/README.md); `make deb` needs root.
.PHONY: wheel deb
wheel:
	packaging/build-wheel.sh dist

deb:
	packaging/build-deb.sh dist

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
