#!/usr/bin/env python3
"""Reads the readings Delta tables Samos keeps on an S3 server with engines that are not Samos.

Usage: read_delta.py s3://bucket/prefix [--values]   (credentials, endpoint in AWS_* variables)

Every instance sharing the dataset writes its own table, s3://bucket/prefix/readings/{instance};
a reading is identified by (instance, key). For each table:

- the deltalake package (delta-rs's Python binding) reads the newest snapshot and every older
  one: each snapshot holds each reading once, and a compaction (an OPTIMIZE commit) leaves the
  row count of the snapshot before it unchanged;
- pyarrow reads the newest snapshot's Parquet files straight from the bucket;
- DuckDB reads the same Parquet files (copied out of the bucket first: DuckDB reaches S3 only
  through its httpfs extension, which it downloads, and the tests run without a network).

Prints one JSON object: the totals over the instances, and with --values every reading's
(node_id, value) per instance.
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

base = sys.argv[1].rstrip("/")
with_values = "--values" in sys.argv[2:]
env = os.environ
options = {
    "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
    "AWS_REGION": env["AWS_REGION"],
    "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
    "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
    "AWS_ALLOW_HTTP": "true",
}
s3 = pafs.S3FileSystem(
    endpoint_override=env["AWS_ENDPOINT_URL"].removeprefix("http://"),
    scheme="http",
    region=env["AWS_REGION"],
    access_key=env["AWS_ACCESS_KEY_ID"],
    secret_key=env["AWS_SECRET_ACCESS_KEY"],
)
root = base.removeprefix("s3://").removeprefix("s3a://") + "/readings"
instances = sorted(
    info.base_name
    for info in s3.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    if info.type == pafs.FileType.Directory
)

out = {
    "instances": instances,
    "rows": 0,
    "unique_keys": 0,
    "files": 0,
    "compactions": 0,
    "versions_checked": 0,
    "pyarrow_rows": 0,
    "duckdb_rows": 0,
    "duckdb_unique_keys": 0,
    "partition_columns": [],
}
if with_values:
    out["values"] = {}

for instance in instances:
    uri = f"{base}/readings/{instance}"
    table = DeltaTable(uri, storage_options=options)
    columns = ["key", "value", "date"] + (["node_id"] if with_values else [])
    latest = table.to_pyarrow_table(columns=columns)
    out["rows"] += latest.num_rows
    out["unique_keys"] += len(pc.unique(latest["key"]))
    out["files"] += len(table.file_uris())
    out["partition_columns"] = table.metadata().partition_columns
    if with_values:
        out["values"][instance] = [
            [str(n), v]
            for n, v in zip(
                latest["node_id"].cast("string").to_pylist(), latest["value"].to_pylist()
            )
        ]

    operations = {h["version"]: h["operation"] for h in table.history()}
    counts = {}
    for version in range(table.version() + 1):
        keys = DeltaTable(uri, storage_options=options, version=version).to_pyarrow_table(
            columns=["key"]
        )["key"]
        counts[version] = len(keys)
        if len(pc.unique(keys)) != len(keys):
            sys.exit(f"{instance} version {version}: {len(keys)} rows but fewer distinct keys")
    compactions = [v for v, op in operations.items() if op == "OPTIMIZE"]
    for version in compactions:
        if counts[version] != counts[version - 1]:
            sys.exit(
                f"{instance} compaction version {version} holds {counts[version]} rows, "
                f"version {version - 1} held {counts[version - 1]}"
            )
    out["compactions"] += len(compactions)
    out["versions_checked"] += len(counts)

    paths = [u.removeprefix("s3://").removeprefix("s3a://") for u in table.file_uris()]
    out["pyarrow_rows"] += sum(
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
        out["duckdb_rows"] += rows
        out["duckdb_unique_keys"] += unique

print(json.dumps(out))
