#!/usr/bin/env bash
# bench/srvbench.sh BINARY LABEL, run in a directory holding ev100k.jsonl (seed 1) and t0.db (its
# import): a fresh copy of t0.db, the server, a cold then warm open loop at
# 2,000/s on 2020-09-16, then closed loops (10 s twice, then $SUSTAIN s, default 60); the load tool is the current build's.
set -u
BIN=$1; LABEL=$2; LT=${LT:-$(cd "$(dirname "$0")/.." && pwd)/target/release/mamori}
pkill -f "serve --listen 127.0.0.1:8089"; while pgrep -f "serve --listen 127.0.0.1:8089" >/dev/null; do sleep 0.5; done
rm -f s.db s.db-wal s.db-shm; cp t0.db s.db
if [ "$LABEL" = old ]; then python3 -c "
import sqlite3; c=sqlite3.connect('s.db'); c.execute('DELETE FROM _sqlx_migrations WHERE version=7'); c.execute('DROP TABLE store_meta'); c.commit()"; fi
KEY=$($BIN --db s.db apikey create --name bench --scopes assess 2>/dev/null | grep -o 'mmr_[A-Za-z0-9_]*' | head -1)
t0=$(date +%s.%N)
(RUST_LOG=info $BIN --db s.db serve --listen 127.0.0.1:8089 > serve-$LABEL.log 2>&1 &)
sleep 0.5; curl -s --retry 60 --retry-connrefused --retry-delay 1 127.0.0.1:8089/readyz >/dev/null
echo "== $LABEL: ready after $(echo "$(date +%s.%N) - $t0" | bc) s"
grep -h "preloaded" serve-$LABEL.log | cut -c1-260
run() { $LT loadtest --url http://127.0.0.1:8089 --key $KEY --events ev100k.jsonl --from 2020-09-16 --to 2020-09-17 "$@" 2>&1 | sed -n '2,11p'; }
echo "-- first run after start (cold), 2000/s 20 s"; run --rate 2000 --seconds 20
echo "-- second run (warm), 2000/s 30 s"; run --rate 2000 --seconds 30
echo "-- closed loop, 32 in flight, 10 s"; run --rate 0 --concurrency 32 --seconds 10 | head -2
echo "-- closed loop, 32 in flight, 10 s"; run --rate 0 --concurrency 32 --seconds 10 | head -2
echo "-- closed loop, 32 in flight, ${SUSTAIN:-60} s (sustained)"; run --rate 0 --concurrency 32 --seconds ${SUSTAIN:-60} | head -2
ps -o rss= -p $(pgrep -f "serve --listen 127.0.0.1:8089") | awk '{print "server RSS " $1/1024 " MB"}'
grep -E "RssAnon" /proc/$(pgrep -f "serve --listen 127.0.0.1:8089")/status
pkill -f "serve --listen 127.0.0.1:8089"
