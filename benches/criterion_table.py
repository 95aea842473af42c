#!/usr/bin/env python3
"""Prints criterion's last results as a table: benchmark, median time, throughput.

Usage: python3 benches/criterion_table.py [GROUP_PREFIX ...]  (reads target/criterion)."""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
prefixes = sys.argv[1:]
for est in sorted(root.glob("**/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    name = bench["full_id"]
    if prefixes and not any(name.startswith(p) for p in prefixes):
        continue
    t = json.loads(est.read_text())["median"]["point_estimate"]  # ns
    thr = bench.get("throughput") or {}
    rate = ""
    if "Elements" in thr:
        rate = f"{thr['Elements'] / t:.1f} G/s"
    elif "Bytes" in thr:
        rate = f"{thr['Bytes'] / t:.2f} GB/s"
    print(f"{name:60} {t / 1e3:12.1f} us  {rate}")
