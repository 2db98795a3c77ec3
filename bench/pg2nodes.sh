#!/usr/bin/env bash
# bench/pg2nodes.sh BINARY URL: two `mamori serve` nodes on one PostgreSQL store (URL, already
# holding ev100k.jsonl's import), each given 1,000 assessments/s (2,000/s in all) by its own
# load tool: node A the attempts of DAY_A (default 2020-09-30, the newest day of the simulation),
# node B those of DAY_B (default 2020-09-29): a server assesses the attempts of now, after the
# history it holds (sessions before 13 used 2020-09-16 and 2020-09-15, two weeks back, which
# nodes preloading the last 14 days do not hold event by event). Run in the folder holding
# ev100k.jsonl. A first run (20 s) then a second (30 s), then the nodes stop.
set -u
BIN=$1; URL=$2; SECONDS_WARM=${SECONDS_WARM:-30}
DAY_A=${DAY_A:-2020-09-30}; DAY_B=${DAY_B:-2020-09-29}
next_day() { date -u -d "$1 + 1 day" +%F; }
stop() {
  pkill -f "serve --listen 127.0.0.1:809[12]"
  while pgrep -f "serve --listen 127.0.0.1:809[12]" >/dev/null; do sleep 0.2; done
}
stop
KEY=$($BIN --db "$URL" apikey create --name bench --scopes assess 2>/dev/null | grep -o 'mmr_[A-Za-z0-9_]*' | head -1)
for p in 8091 8092; do (RUST_LOG=info $BIN --db "$URL" serve --listen 127.0.0.1:$p > serve-$p.log 2>&1 &); done
for p in 8091 8092; do curl -s --retry 60 --retry-connrefused --retry-delay 1 127.0.0.1:$p/readyz >/dev/null; done
run() {
  $BIN loadtest --url http://127.0.0.1:8091 --key $KEY --events ev100k.jsonl --from $DAY_A --to $(next_day $DAY_A) --rate 1000 "$@" > lt-a.txt 2>&1 &
  $BIN loadtest --url http://127.0.0.1:8092 --key $KEY --events ev100k.jsonl --from $DAY_B --to $(next_day $DAY_B) --rate 1000 "$@" > lt-b.txt 2>&1
  wait
  echo "node A:"; sed -n '2,11p' lt-a.txt; echo "node B:"; sed -n '2,11p' lt-b.txt
}
echo "-- cold, 1,000/s per node, 20 s"; run --seconds 20
echo "-- warm, 1,000/s per node, $SECONDS_WARM s"; run --seconds $SECONDS_WARM
for p in 8091 8092; do ps -o rss= -p $(pgrep -f "serve --listen 127.0.0.1:$p") | awk -v p=$p '{print "node " p " RSS " $1/1024 " MB"}'; done
stop
