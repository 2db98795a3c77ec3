#!/usr/bin/env bash
# bench/pgload.sh SECONDS [DAY_A DAY_B]: 1,000 assessments/s on each node started by
# bench/pgnodes.sh (node A the attempts of DAY_A, default 2020-09-30; node B of DAY_B, default
# 2020-09-29), for SECONDS; prints each node's p50, p95 and p99 (ms). BIN: the load tool
# (default mamori on the PATH); EV: the events file (default ev100k.jsonl). Run in the folder
# holding it and ./KEY. Session 16 ran one 20 s load not counted, then two counted.
# A replay adds its events to the same day under new ids, so each run grows that day's lists
# (session 17: p99 7-9 ms on a fresh import, 25 ms after five runs): re-import before a series,
# or give each series its own days (older days start slowly: their IPs' window edges are not
# preloaded).
set -u
S=${1:-30}; A=${2:-2020-09-30}; B=${3:-2020-09-29}; KEY=$(cat KEY); BIN=${BIN:-mamori}; EV=${EV:-ev100k.jsonl}
nd() { date -u -d "$1 + 1 day" +%F; }
$BIN loadtest --url http://127.0.0.1:8091 --key "$KEY" --events "$EV" --from "$A" --to "$(nd "$A")" --rate 1000 --seconds "$S" > lt-a.txt 2>&1 &
$BIN loadtest --url http://127.0.0.1:8092 --key "$KEY" --events "$EV" --from "$B" --to "$(nd "$B")" --rate 1000 --seconds "$S" > lt-b.txt 2>&1
wait
for f in lt-a.txt lt-b.txt; do awk '/p50|p95|p99 /{printf "%s %s  ", $1, $2} END{print ""}' "$f"; done
