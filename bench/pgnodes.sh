#!/usr/bin/env bash
# bench/pgnodes.sh BINARY URL: starts two `mamori serve` nodes (127.0.0.1:8091 and :8092) on one
# PostgreSQL store (URL, holding ev100k.jsonl's import), waits until both have preloaded, and
# writes an API key with the assess scope to ./KEY. The nodes keep running (stop them with
# `pkill -f "serve --listen 127.0.0.1:809"`): run bench/pgload.sh against them as often as needed,
# alternating builds (session 16: this machine's speed changed by a quarter within a session).
set -u
BIN=$1; URL=$2
stop() {
  pkill -f "serve --listen 127.0.0.1:809[12]"
  while pgrep -f "serve --listen 127.0.0.1:809[12]" >/dev/null; do sleep 0.2; done
}
stop
$BIN --db "$URL" apikey create --name bench --scopes assess 2>/dev/null | grep -o 'mmr_[A-Za-z0-9_]*' | head -1 > KEY
for p in 8091 8092; do (RUST_LOG=info $BIN --db "$URL" serve --listen 127.0.0.1:$p > serve-$p.log 2>&1 &); done
for p in 8091 8092; do curl -s --retry 120 --retry-connrefused --retry-delay 1 127.0.0.1:$p/readyz >/dev/null; done
echo ready
