#!/usr/bin/env python3
"""DuckDB side of `meterstack bench`: runs a query set over the lake's Parquet files.

Usage: bench_duckdb.py RUNS SPEC_JSON
SPEC_JSON is {"views": {name: "FROM-clause source"}, "queries": [{"name", "sql"}]}; each view
becomes `CREATE VIEW name AS SELECT * FROM source` (e.g. read_parquet(…, hive_partitioning)).
Prints {name: {"seconds": median, "rows": rows}} after one warm-up run per query, as
meterstack's side does.
"""
import json
import statistics
import sys
import time

import duckdb


def main() -> None:
    runs, spec = int(sys.argv[1]), json.loads(sys.argv[2])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, source in spec["views"].items():
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM {source}")
    out = {}
    for q in spec["queries"]:
        rows = len(con.execute(q["sql"]).fetchall())
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            con.execute(q["sql"]).fetchall()
            times.append(time.perf_counter() - started)
        out[q["name"]] = {"seconds": statistics.median(times), "rows": rows}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
