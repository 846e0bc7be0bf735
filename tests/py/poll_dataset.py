"""Reads a tweet-embed output directory as a dataset over and over, as users' readers do while
a run writes it: pyarrow datasets, DuckDB globs and polars scans. Every read must succeed and
never see an id twice. Stops when the stop file appears (after one last round). Prints one line
of totals; exits 1 on any failed read or duplicate id.

usage: poll_dataset.py OUT STOP_FILE
"""
import glob
import os
import sys
import time

import duckdb
import polars as pl
import pyarrow.dataset as ds


def ids_pyarrow(out):
    # Before the first file there is no schema to ask for `id` in: an empty dataset, not a failure.
    if not glob.glob(os.path.join(out, "*.parquet")):
        return []
    dataset = ds.dataset(out, format="parquet", ignore_prefixes=[".", "_"])
    return dataset.to_table(columns=["id"]).column("id").to_pylist()


def ids_duckdb(out):
    if not glob.glob(os.path.join(out, "*.parquet")):
        return []
    pattern = os.path.join(out, "*.parquet").replace("'", "''")
    return [r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet('{pattern}')").fetchall()]


def ids_polars(out):
    if not glob.glob(os.path.join(out, "*.parquet")):
        return []
    return pl.scan_parquet(os.path.join(out, "*.parquet")).select("id").collect()["id"].to_list()


def main():
    out, stop_file = sys.argv[1], sys.argv[2]
    reads = failures = duplicates = 0
    most = 0
    deadline = time.time() + 1800
    while time.time() < deadline:
        last = os.path.exists(stop_file)
        for name, read in (("pyarrow", ids_pyarrow), ("duckdb", ids_duckdb), ("polars", ids_polars)):
            try:
                ids = read(out)
            except Exception as e:  # noqa: BLE001 - any failed read is the finding
                failures += 1
                print(f"FAILED {name}: {e!r}", flush=True)
                continue
            reads += 1
            if len(ids) != len(set(ids)):
                duplicates += 1
                print(f"DUPLICATE {name}: {len(ids) - len(set(ids))} ids twice", flush=True)
            most = max(most, len(ids))
        if last:
            break
        time.sleep(0.2)
    print(f"reads={reads} failures={failures} duplicates={duplicates} most_rows={most}", flush=True)
    sys.exit(1 if failures or duplicates else 0)


if __name__ == "__main__":
    main()
