#!/usr/bin/env python3
"""Runs investigate.sql in DuckDB with the same flags as `mamori investigate --events`, or
monitor.sql (--report monitor) with those of `mamori monitor`.

    python3 bench/duckdb/run.py --events events.jsonl --kind destination_change \
        --from 2020-07-01 --to 2020-09-17 [--channel web,app] [--threads 2] [--out out.csv]
    python3 bench/duckdb/run.py --report monitor --events events.jsonl \
        --from 2020-09-16 --to 2020-09-17 [--link-days 90]

Writes the literal columns as CSV (same header and text forms as mamori's CSV report) and prints
the elapsed wall time on stderr.
"""
import argparse
import csv
import datetime as dt
import pathlib
import sys
import time

import duckdb

TOKYO = dt.timezone(dt.timedelta(hours=9))


def bound_us(s: str) -> int:
    if len(s) == 10:
        t = dt.datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=TOKYO)
    else:
        t = dt.datetime.fromisoformat(s)
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", nargs="+", required=True)
    ap.add_argument("--kind", default="destination_change")
    ap.add_argument("--from", dest="from_", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--channel", default="web,app")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--report", choices=["investigate", "monitor"], default="investigate")
    ap.add_argument("--link-days", type=int, default=90)
    a = ap.parse_args()
    here = pathlib.Path(__file__).parent
    sql = (here / "tokyo.sql").read_text() + "\n" + (here / f"{a.report}.sql").read_text()
    params = {
        "link_days": a.link_days,
        "files": a.events,
        "kind": a.kind,
        "channels": a.channel.split(","),
        "from_us": bound_us(a.from_),
        "to_us": bound_us(a.to),
    }
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    code = "\n".join(l for l in sql.splitlines() if not l.lstrip().startswith("--"))
    statements = [s for s in code.split(";\n") if s.strip()]
    for stmt in statements[:-1]:
        used = {k: v for k, v in params.items() if "$" + k in stmt}
        con.execute(stmt, used)
    last = statements[-1]
    rows = con.execute(last, {k: v for k, v in params.items() if "$" + k in last}).fetchall()
    header = [d[0] for d in con.description]
    elapsed = time.perf_counter() - started
    out = open(a.out, "w", newline="") if a.out else sys.stdout
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["true" if v is True else "false" if v is False else v for v in r])
    if a.out:
        out.close()
    print(f"duckdb {duckdb.__version__}: {len(rows)} procedures in {elapsed:.3f} s "
          f"({a.threads} threads)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
