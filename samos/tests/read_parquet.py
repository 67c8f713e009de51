#!/usr/bin/env python3
"""Reads Samos's Parquet store with pyarrow (an independent reader) and prints a JSON summary.

Usage: read_parquet.py DATA_DIR
"""
import json
import sys

import pyarrow.dataset as ds

root = sys.argv[1] + "/readings"
dataset = ds.dataset(root, format="parquet", partitioning="hive")
table = dataset.to_table()
cols = table.to_pydict()
print(json.dumps({
    "rows": table.num_rows,
    "files": len(dataset.files),
    "values": sorted(v for v in cols.get("value", []) if v is not None),
    "unique_keys": len(set(cols.get("key", []))),
    "nodes": sorted(set(cols.get("node_id", []))),
    "sensors": sorted(set(cols.get("sensor", []))),
    "dates": sorted(set(str(d) for d in cols.get("date", []))),
    "severities": sorted(set(cols.get("severity", []))),
    "columns": table.schema.names,
}))
