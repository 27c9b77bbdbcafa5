#!/usr/bin/env python3
"""DuckDB side of `meterstack bench`: runs a query set over the raw zone's Parquet files.

Usage: bench_duckdb.py RAW_READINGS_DIR RUNS QUERIES_JSON
QUERIES_JSON is a list of {"name", "sql"}; the SQL reads the view `raw_readings`.
Prints {name: median seconds} after one warm-up run per query, as meterstack's side does.
"""
import json
import statistics
import sys
import time

import duckdb


def main() -> None:
    root, runs, queries = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"CREATE VIEW raw_readings AS SELECT * FROM read_parquet('{root}/*/*/*.parquet', hive_partitioning = true)"
    )
    out = {}
    for q in queries:
        con.execute(q["sql"]).fetchall()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            con.execute(q["sql"]).fetchall()
            times.append(time.perf_counter() - started)
        out[q["name"]] = statistics.median(times)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
