#!/usr/bin/env python3
"""Reads the readings Delta table Samos keeps on an S3 server with engines that are not Samos.

Usage: read_delta.py s3://bucket/prefix/readings   (credentials and endpoint in AWS_* variables)

- the deltalake package (delta-rs's Python binding) reads the newest snapshot and every older
  one: each snapshot holds each reading once, and a compaction (an OPTIMIZE commit) leaves the
  row count of the snapshot before it unchanged;
- pyarrow reads the newest snapshot's Parquet files straight from the bucket;
- DuckDB reads the same Parquet files (copied out of the bucket first: DuckDB reaches S3 only
  through its httpfs extension, which it downloads, and the tests run without a network).

Prints one JSON object.
"""
import json
import os
import sys
import tempfile

import duckdb
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable

uri = sys.argv[1]
env = os.environ
options = {
    "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
    "AWS_REGION": env["AWS_REGION"],
    "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
    "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
    "AWS_ALLOW_HTTP": "true",
}

table = DeltaTable(uri, storage_options=options)
latest = table.to_pyarrow_table(columns=["key", "value", "date"])
out = {
    "version": table.version(),
    "rows": latest.num_rows,
    "unique_keys": len(pc.unique(latest["key"])),
    "files": len(table.file_uris()),
    "partition_columns": table.metadata().partition_columns,
}

operations = {h["version"]: h["operation"] for h in table.history()}
counts = {}
for version in range(table.version() + 1):
    keys = DeltaTable(uri, storage_options=options, version=version).to_pyarrow_table(
        columns=["key"]
    )["key"]
    counts[version] = len(keys)
    if len(pc.unique(keys)) != len(keys):
        sys.exit(f"version {version}: {len(keys)} rows but fewer distinct keys")
compactions = [v for v, op in operations.items() if op == "OPTIMIZE"]
for version in compactions:
    if counts[version] != counts[version - 1]:
        sys.exit(
            f"compaction version {version} holds {counts[version]} rows, "
            f"version {version - 1} held {counts[version - 1]}"
        )
out["compactions"] = len(compactions)
out["versions_checked"] = len(counts)

s3 = pafs.S3FileSystem(
    endpoint_override=env["AWS_ENDPOINT_URL"].removeprefix("http://"),
    scheme="http",
    region=env["AWS_REGION"],
    access_key=env["AWS_ACCESS_KEY_ID"],
    secret_key=env["AWS_SECRET_ACCESS_KEY"],
)
paths = [u.removeprefix("s3://").removeprefix("s3a://") for u in table.file_uris()]
out["pyarrow_rows"] = sum(
    pq.ParquetFile(s3.open_input_file(p)).metadata.num_rows for p in paths
)

with tempfile.TemporaryDirectory() as tmp:
    local = []
    for i, path in enumerate(paths):
        dest = os.path.join(tmp, f"{i}.parquet")
        pafs.copy_files(path, dest, source_filesystem=s3)
        local.append(dest)
    rows, unique = (
        duckdb.connect()
        .execute(f"SELECT count(*), count(DISTINCT key) FROM read_parquet({local!r})")
        .fetchone()
        if local
        else (0, 0)
    )
    out["duckdb_rows"] = rows
    out["duckdb_unique_keys"] = unique

print(json.dumps(out))
