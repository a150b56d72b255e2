#!/usr/bin/env bash
# `make demo`: a daemon on the example corpus, three questions, a remembered
# fact recalled, status, a verified log. Everything lives in a throwaway home,
# so your own ~/.local/share/ifmem is never touched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${IFMEM_BIN:-$here/../.venv/bin}"
demo="$(mktemp -d /tmp/ifmem-demo.XXXXXX)"
export HOME="$demo/home" XDG_CONFIG_HOME="$demo/home/.config" XDG_DATA_HOME="$demo/home/.local/share"
export XDG_STATE_HOME="$demo/home/.local/state" XDG_RUNTIME_DIR="$demo/run"
mkdir -p "$HOME" && mkdir -m 700 "$XDG_RUNTIME_DIR"
config="$demo/ifmem.toml"
cat > "$config" <<TOML
[daemon]
heartbeat_interval = 1
heartbeat_timeout = 5

[[shard]]
name = "docs"
description = "Lighthouse runbook, architecture and decisions"
paths = ["$here/corpus/docs/**/*.md"]

[[shard]]
name = "code"
description = "Lighthouse source"
paths = ["$here/corpus/code/**/*.py"]
TOML

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then kill "$daemon_pid"; wait "$daemon_pid" || true; fi
  rm -rf "$demo"
}
trap cleanup EXIT

step "starting ifmemd on the example corpus (config: $config)"
"$bin/ifmemd" --config "$config" 2> "$demo/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do
  if "$bin/ifmem" status --json 2>/dev/null | grep -q '"status": "ready"'; then
    ready=$("$bin/ifmem" status --json | grep -c '"status": "ready"' || true)
    [ "$ready" -ge 3 ] && break
  fi
  sleep 0.1
done
"$bin/ifmem" status
step "shards loading, as the log recorded it"
"$bin/ifmem" log --kind 'shard.spawned' --kind 'shard.ready'

for q in "how do I roll back a deploy" "what happens when a batch fails to insert" "why did we keep PostgreSQL"; do
  step "ifmem ask \"$q\""
  "$bin/ifmem" ask -k 3 "$q"
done

step "ifmem remember (working memory is a fold of the event log)"
"$bin/ifmem" remember "The staging database password rotates on the first Monday of each month."
step "ifmem ask \"when does the staging password rotate\""
"$bin/ifmem" ask -k 2 "when does the staging password rotate"

step "ifmem status"
"$bin/ifmem" status

step "ifmem stop (records daemon.stopping and a signed checkpoint)"
"$bin/ifmem" stop
wait "$daemon_pid" || true
daemon_pid=""

step "ifmem log --limit 6"
"$bin/ifmem" log --limit 6

step "ifmem audit verify --checkpoint (every hash, link and Ed25519 signature)"
"$bin/ifmem" audit verify --checkpoint "$XDG_STATE_HOME/ifmem/checkpoints"
