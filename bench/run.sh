#!/usr/bin/env bash
# Benchmarks of the risk platform core, recorded in docs/benchmarks.md.
#   bench/run.sh CUSTOMERS [WORKDIR]
# Simulates a broker of CUSTOMERS customers (seed 1) unless WORKDIR already has it, then measures:
# import into a fresh embedded store, the seed's investigation from the store, and the same
# investigation straight from the file with mamori and with DuckDB (bench/duckdb/run.py), in one run.
# FILES=0 skips the straight-from-file part (at 1,000,000 customers the file is 32 GB and DuckDB
# needs more memory than the machine has).
set -euo pipefail
customers=${1:?usage: bench/run.sh CUSTOMERS [WORKDIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$root/target/bench-$customers}
mkdir -p "$work"
cd "$root" && cargo build --release --quiet
bin=$root/target/release/mamori
cd "$work"
[ -f events.jsonl ] || "$bin" simulate --customers "$customers" --seed 1 --out events.jsonl --labels labels.csv
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(wc -l < events.jsonl) events, $(du -hL events.jsonl | cut -f1)"
rm -f bench.db bench.db-wal bench.db-shm
/usr/bin/time -f "import: %e s wall, %M KB max RSS" "$bin" --db bench.db import --quiet events.jsonl
echo "store: $(du -h bench.db | cut -f1)"
flags=(--from 2020-07-01 --to 2020-09-17 --format csv)
for i in 1 2 3; do
  /usr/bin/time -f "investigate (store) run $i: %e s wall, %M KB max RSS" "$bin" --db bench.db investigate "${flags[@]}" --out store.csv
done
echo "procedures: $(($(wc -l < store.csv) - 1))"
[ "${FILES:-1}" = 0 ] && exit 0
for i in 1 2 3; do
  /usr/bin/time -f "investigate --events run $i: %e s wall, %M KB max RSS" "$bin" investigate --events events.jsonl --quiet "${flags[@]}" --out files.csv
  /usr/bin/time -f "duckdb run $i: %e s wall, %M KB max RSS" python3 "$root/bench/duckdb/run.py" --events events.jsonl --from 2020-07-01 --to 2020-09-17 --out duckdb.csv
done
cmp store.csv files.csv && echo "store and --events reports are identical"
