"""Checks tweet-embed's Parquet output with pyarrow, a reader nobody here wrote.

usage: check_parquet.py OUT_DIR --rows N --dim D [--rejects M] [--model MODEL]

Reads every final file (part-*.parquet) of OUT_DIR and OUT_DIR/_rejects and checks the schema
of DESIGN.md ("Output schema") with the id type the file's metadata records
(tweet_embed.id_type: an int64 `id` for int64, a string one otherwise; rejections of a type with
strays have a nullable `id` and a `stray_id`), zstd compression, statistics, the row counts,
that no id appears twice, that every row's epoch lies in its file name's range, and that no temporary or
partial file is left. Then reads OUT_DIR as one dataset, as a user would, which must give the
rows and nothing else. Then runs the README's nearest-neighbour queries in DuckDB (the list
column cast to FLOAT[dim]) and polars: a row is nearest to itself, and they agree. Prints
"ok ..." and exits 0, or prints what is wrong and exits 1.
"""

import argparse
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

NAME = re.compile(r"^part-e(\d{12,})-e(\d{12,})-w(\d{3,})-(\d{4,})\.parquet$")


def id_arrow_type(id_type):
    return pa.int64() if id_type == "int64" else pa.string()


def rows_schema(dim, id_type="extjson"):
    dict_str = pa.dictionary(pa.int32(), pa.string())
    return pa.schema(
        [
            pa.field("id", id_arrow_type(id_type), nullable=False),
            pa.field("embedding", pa.list_(pa.field("item", pa.float32(), nullable=False), dim), nullable=False),
            pa.field("model", dict_str, nullable=False),
            pa.field("text_hash", pa.uint64(), nullable=False),
            pa.field("tokens", pa.uint32(), nullable=False),
        ]
        + provenance_fields()
    )


def provenance_fields():
    """The columns rows and rejections share: where a document came from and when."""
    dict_str = pa.dictionary(pa.int32(), pa.string())
    return [
        pa.field("lang", dict_str, nullable=True),
        pa.field("created_at", pa.timestamp("ms", tz="UTC"), nullable=True),
        pa.field("source", dict_str, nullable=False),
        pa.field("epoch", pa.uint64(), nullable=False),
    ]


def rejects_schema(id_type="extjson"):
    strays = id_type != "extjson"
    return pa.schema(
        [
            pa.field("id", id_arrow_type(id_type), nullable=strays),
            pa.field("reason", pa.string(), nullable=False),
        ]
        + provenance_fields()
        + ([pa.field("stray_id", pa.string(), nullable=True)] if strays else [])
    )


def id_type_of(pf):
    """The id type a file records; files without it were written as extended JSON."""
    meta = pf.metadata.metadata or {}
    return meta.get(b"tweet_embed.id_type", b"extjson").decode()


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check_dir(directory, make_schema, expected_rows, model=None):
    files = sorted(p for p in directory.iterdir() if p.is_file())
    for p in files:
        if not NAME.match(p.name):
            fail(f"unexpected file {p} (temporary or partial left behind?)")
    ids = set()
    total = 0
    for p in files:
        lo, hi = (int(g) for g in NAME.match(p.name).groups()[:2])
        pf = pq.ParquetFile(p)
        schema = make_schema(id_type_of(pf))
        got = pf.schema_arrow
        if not got.equals(schema, check_metadata=False):
            fail(f"{p.name}: schema\n{got}\nexpected\n{schema}")
        md = pf.metadata
        for rg in range(md.num_row_groups):
            for c in range(md.num_columns):
                col = md.row_group(rg).column(c)
                if col.compression != "ZSTD":
                    fail(f"{p.name}: column {col.path_in_schema} is {col.compression}, not ZSTD")
                if col.path_in_schema in ("id", "epoch") and not col.is_stats_set:
                    fail(f"{p.name}: column {col.path_in_schema} has no statistics")
        table = pf.read()
        if table.num_rows != md.num_rows:
            fail(f"{p.name}: read {table.num_rows} rows, footer says {md.num_rows}")
        epochs = table.column("epoch").to_pylist()
        if any(not (lo <= e <= hi) for e in epochs):
            fail(f"{p.name}: an epoch outside {lo}..{hi}")
        if model is not None and "model" in table.column_names:
            models = set(table.column("model").to_pylist())
            if models != {model}:
                fail(f"{p.name}: models {models}, expected {model}")
        strays = table.column("stray_id").to_pylist() if "stray_id" in table.column_names else [None] * table.num_rows
        for i, stray in zip(table.column("id").to_pylist(), strays):
            i = ("stray", stray) if i is None else i
            if i in ids:
                fail(f"id {i} appears twice")
            ids.add(i)
        total += table.num_rows
    if total != expected_rows:
        fail(f"{directory}: {total} rows, expected {expected_rows}")
    return len(files), total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--rejects", type=int, default=0)
    ap.add_argument("--model")
    args = ap.parse_args()
    n_files, n_rows = check_dir(args.out_dir, lambda t: rows_schema(args.dim, t), args.rows, args.model)
    rejects_dir = args.out_dir / "_rejects"
    r_files, r_rows = check_dir(rejects_dir, rejects_schema, args.rejects) if rejects_dir.exists() else (0, 0)
    if r_rows != args.rejects:
        fail(f"{r_rows} rejections, expected {args.rejects}")
    if n_files:
        whole = pq.read_table(args.out_dir)
        if whole.num_rows != args.rows or whole.schema.names != rows_schema(args.dim).names:
            fail(f"reading {args.out_dir} as a dataset gives {whole.num_rows} rows of {whole.schema.names}")
        nearest_neighbours(args.out_dir, args.dim)
    print(f"ok pyarrow {pa.__version__}: {n_rows} rows in {n_files} files, {r_rows} rejections in {r_files} files")


def nearest_neighbours(out_dir, dim):
    """The README's queries: the tweets nearest to one of them, in DuckDB and in polars."""
    import duckdb
    import polars as pl

    glob = f"{out_dir}/*.parquet"
    first = pq.read_table(next(iter(sorted(out_dir.glob("part-*.parquet")))), columns=["id"])["id"][0].as_py()
    rows = duckdb.sql(
        f"""WITH q AS (SELECT embedding::FLOAT[{dim}] AS v FROM '{glob}' WHERE id = $id)
        SELECT r.id, array_cosine_similarity(r.embedding::FLOAT[{dim}], q.v) AS score
        FROM '{glob}' r, q ORDER BY score DESC LIMIT 3""",
        params={"id": first},
    ).fetchall()
    q = pl.scan_parquet(glob).filter(pl.col("id") == first).select("embedding").collect().item().to_list()
    # The README's dot product, over the norms: test outputs are not all of unit vectors.
    vec = pl.col("embedding").arr.to_list()
    dot = vec.list.eval((pl.element() * pl.Series(q)).sum()).list.first()
    norm = vec.list.eval(pl.element().pow(2).sum()).list.first().sqrt()
    q_norm = sum(x * x for x in q) ** 0.5
    top = (
        pl.scan_parquet(glob)
        .select("id", score=dot / (norm * q_norm))
        .sort("score", descending=True)
        .head(3)
        .collect()
        .rows()
    )
    # Identical texts have identical vectors: ties may come in any order, so scores are compared.
    if not rows or abs(rows[0][1] - 1.0) > 1e-4:
        fail(f"DuckDB's nearest to {first} is {rows[:1]}, not itself")
    if len(rows) != len(top) or any(abs(a[1] - b[1]) > 1e-4 for a, b in zip(rows, top)):
        fail(f"DuckDB {rows} and polars {top} disagree")


if __name__ == "__main__":
    main()
