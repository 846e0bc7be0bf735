"""Checks `tweet-embed consolidate` with pyarrow, a reader nobody here wrote.

usage: check_consolidate.py INPUT_DIR OUTPUT_DIR --mode plain|sort|dedup --dim D
                            [--min-files N] [--max-files N]

Reads every input file the way README's "consolidate" section says it is mapped (files in path
order, `_`/`.`-prefixed names skipped; id from `id`, `_id` or `tweet_id`, integers as decimal
strings; vector from `embedding` or `vector`, rounded to float32; `lang` and `text_hash` carried
when present), independently of the Rust code, and every output file, then checks:
- plain: the multiset of output rows equals the input's;
- sort:  the same, and ids never decrease across the files in name order;
- dedup: one row per input id, ids strictly increasing, each the last row read of its id.
Also: the output directory holds only `consolidated-*.parquet` files, between --min-files and
--max-files of them, with `id` string and `embedding` fixed_size_list<float32, D>.
Prints "ok ..." and exits 0, or prints what is wrong and exits 1.
"""

import argparse
import collections
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ID_COLUMNS = ["id", "_id", "tweet_id"]
EMBEDDING_COLUMNS = ["embedding", "vector"]


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def input_files(root):
    found = []

    def walk(d):
        for p in d.iterdir():
            if p.name.startswith("_") or p.name.startswith("."):
                continue
            if p.is_dir():
                walk(p)
            elif p.name.endswith(".parquet"):
                found.append(p)

    walk(root)
    # Path order component by component, as Rust's PathBuf orders them.
    return sorted(found, key=lambda p: [s.encode() for s in p.relative_to(root).parts])


def rows_of(table, mapped):
    """(id, vector, lang, text_hash) tuples of a table; `mapped` says whether to apply the input rules."""
    names = table.column_names
    if mapped:
        id_col = next(n for n in ID_COLUMNS if n in names)
        emb_col = next(n for n in EMBEDDING_COLUMNS if n in names)
    else:
        id_col, emb_col = "id", "embedding"
    ids = [i if isinstance(i, str) else str(i) for i in table.column(id_col).to_pylist()]
    emb = table.column(emb_col)
    item = pa.list_(pa.float32())
    vectors = [tuple(v) for v in emb.cast(item).to_pylist()]
    n = table.num_rows
    lang = table.column("lang").cast(pa.string()).to_pylist() if "lang" in names else [None] * n
    hashes = table.column("text_hash").to_pylist() if "text_hash" in names else [None] * n
    return list(zip(ids, vectors, lang, hashes))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input_dir", type=Path)
    ap.add_argument("output_dir", type=Path)
    ap.add_argument("--mode", choices=["plain", "sort", "dedup"], required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--min-files", type=int, default=1)
    ap.add_argument("--max-files", type=int, default=1 << 30)
    args = ap.parse_args()

    inputs = []
    for p in input_files(args.input_dir):
        inputs.extend(rows_of(pq.read_table(p), mapped=True))

    entries = sorted(args.output_dir.iterdir())
    for p in entries:
        if not (p.is_file() and p.name.startswith("consolidated-") and p.name.endswith(".parquet")):
            fail(f"unexpected entry {p} in the output directory")
    if not (args.min_files <= len(entries) <= args.max_files):
        fail(f"{len(entries)} output files, expected {args.min_files}..{args.max_files}")
    outputs = []
    for p in entries:
        pf = pq.ParquetFile(p)
        schema = pf.schema_arrow
        if schema.field("id").type != pa.string():
            fail(f"{p.name}: id is {schema.field('id').type}")
        want = pa.list_(pa.field("item", pa.float32(), nullable=False), args.dim)
        if schema.field("embedding").type != want:
            fail(f"{p.name}: embedding is {schema.field('embedding').type}, expected {want}")
        table = pf.read()
        if table.num_rows != pf.metadata.num_rows:
            fail(f"{p.name}: read {table.num_rows} rows, footer says {pf.metadata.num_rows}")
        outputs.extend(rows_of(table, mapped=False))

    out_ids = [r[0] for r in outputs]
    if args.mode in ("plain", "sort"):
        if collections.Counter(inputs) != collections.Counter(outputs):
            missing = collections.Counter(inputs) - collections.Counter(outputs)
            extra = collections.Counter(outputs) - collections.Counter(inputs)
            fail(f"row multisets differ: {len(missing)} input rows missing, {len(extra)} unexpected, e.g. {list(missing)[:1]} {list(extra)[:1]}")
    if args.mode == "sort":
        bad = next((i for i in range(1, len(out_ids)) if out_ids[i - 1] > out_ids[i]), None)
        if bad is not None:
            fail(f"ids out of order at output row {bad}: {out_ids[bad - 1]!r} > {out_ids[bad]!r}")
    if args.mode == "dedup":
        latest = {}
        for r in inputs:
            latest[r[0]] = r
        bad = next((i for i in range(1, len(out_ids)) if out_ids[i - 1] >= out_ids[i]), None)
        if bad is not None:
            fail(f"ids not strictly increasing at output row {bad}: {out_ids[bad - 1]!r}, {out_ids[bad]!r}")
        if set(out_ids) != set(latest):
            fail(f"{len(set(latest) - set(out_ids))} input ids missing, {len(set(out_ids) - set(latest))} unexpected")
        wrong = [r[0] for r in outputs if latest[r[0]] != r]
        if wrong:
            fail(f"{len(wrong)} ids keep a row other than the last one read, e.g. {wrong[0]}")
    dups = len(inputs) - len(set(r[0] for r in inputs))
    print(f"ok pyarrow {pa.__version__}: {len(inputs)} input rows ({dups} duplicate ids), {len(outputs)} output rows in {len(entries)} files, mode {args.mode}")


if __name__ == "__main__":
    main()
