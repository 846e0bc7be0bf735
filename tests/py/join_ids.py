"""Joins tweet-embed's output to an export of the collection with DuckDB, as a user would.

usage: join_ids.py OUT_DIR EXPORT.jsonl ID_TYPE

EXPORT.jsonl holds one tweet per line as mongoexport writes it (relaxed extended JSON): an
integer `_id` as a JSON number, a string as a JSON string, an ObjectId as {"$oid": "hex"}.
The rows (OUT_DIR/*.parquet) and the rejections (OUT_DIR/_rejects/*.parquet) are joined on `id`
with nothing but the natural key: `t._id`, or `t._id."$oid"` for ObjectIds, both sides of one
type, no cast. Prints "rows joined rejects rejects_joined id_type key_type" and exits 0.
"""

import sys
from pathlib import Path

import duckdb


def main():
    out, export, id_type = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    key = 't._id."$oid"' if id_type == "objectid" else "t._id"
    con = duckdb.connect()
    con.sql(f"CREATE VIEW tweets AS SELECT * FROM read_json_auto('{export}', format = 'newline_delimited')")
    con.sql(f"CREATE VIEW rows AS SELECT * FROM read_parquet('{out}/*.parquet')")
    rows = con.sql("SELECT count(*) FROM rows").fetchone()[0]
    joined = con.sql(f"SELECT count(*) FROM rows p JOIN tweets t ON p.id = {key}").fetchone()[0]
    types = con.sql(f"SELECT typeof(p.id), typeof({key}) FROM rows p JOIN tweets t ON p.id = {key} LIMIT 1").fetchone()
    rejects, rejects_joined = 0, 0
    if any((out / "_rejects").glob("*.parquet")):
        con.sql(f"CREATE VIEW rejects AS SELECT * FROM read_parquet('{out}/_rejects/*.parquet')")
        rejects = con.sql("SELECT count(*) FROM rejects").fetchone()[0]
        rejects_joined = con.sql(f"SELECT count(*) FROM rejects r JOIN tweets t ON r.id = {key}").fetchone()[0]
    id_sql, key_sql = types if types else ("none", "none")
    print(rows, joined, rejects, rejects_joined, id_sql, key_sql)


if __name__ == "__main__":
    main()
