#!/usr/bin/env bash
# bench/pg2nodes.sh BINARY URL: two `mamori serve` nodes on one PostgreSQL store (URL, already
# holding ev100k.jsonl's import), each given 1,000 assessments/s (2,000/s in all) by its own
# load tool: node A the attempts of 2020-09-16, node B those of 2020-09-15. Run in the folder
# holding ev100k.jsonl. A cold run (20 s) then a warm one (30 s), then the nodes stop.
set -u
BIN=$1; URL=$2; SECONDS_WARM=${SECONDS_WARM:-30}
pkill -f "serve --listen 127.0.0.1:809[12]"; sleep 0.5
KEY=$($BIN --db "$URL" apikey create --name bench --scopes assess 2>/dev/null | grep -o 'mmr_[A-Za-z0-9_]*' | head -1)
for p in 8091 8092; do (RUST_LOG=info $BIN --db "$URL" serve --listen 127.0.0.1:$p > serve-$p.log 2>&1 &); done
for p in 8091 8092; do curl -s --retry 60 --retry-connrefused --retry-delay 1 127.0.0.1:$p/readyz >/dev/null; done
run() {
  $BIN loadtest --url http://127.0.0.1:8091 --key $KEY --events ev100k.jsonl --from 2020-09-16 --to 2020-09-17 --rate 1000 "$@" > lt-a.txt 2>&1 &
  $BIN loadtest --url http://127.0.0.1:8092 --key $KEY --events ev100k.jsonl --from 2020-09-15 --to 2020-09-16 --rate 1000 "$@" > lt-b.txt 2>&1
  wait
  echo "node A:"; sed -n '2,11p' lt-a.txt; echo "node B:"; sed -n '2,11p' lt-b.txt
}
echo "-- cold, 1,000/s per node, 20 s"; run --seconds 20
echo "-- warm, 1,000/s per node, $SECONDS_WARM s"; run --seconds $SECONDS_WARM
for p in 8091 8092; do ps -o rss= -p $(pgrep -f "serve --listen 127.0.0.1:$p") | awk -v p=$p '{print "node " p " RSS " $1/1024 " MB"}'; done
pkill -f "serve --listen 127.0.0.1:809[12]"
