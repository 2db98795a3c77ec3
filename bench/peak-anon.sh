#!/usr/bin/env bash
# Runs a command and prints its peak anonymous memory (RssAnon, polled every 0.1 s) and wall
# time. /usr/bin/time's max RSS also counts the store's file pages that SQLite maps (up to the
# 64 GiB mmap_size), which are the kernel's page cache rather than memory the process holds.
#   bench/peak-anon.sh mamori --db x.db import events.jsonl
set -euo pipefail
start=$(date +%s.%N)
"$@" &
pid=$!
peak=0
while kill -0 "$pid" 2>/dev/null; do
  kb=$(awk '/^RssAnon:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  [ "${kb:-0}" -gt "$peak" ] && peak=$kb
  sleep 0.1
done
wait "$pid"
rc=$?
end=$(date +%s.%N)
echo "peak RssAnon: $((peak / 1024)) MB, wall: $(awk "BEGIN{printf \"%.2f\", $end - $start}") s" >&2
exit $rc
