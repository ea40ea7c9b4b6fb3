"""Paired differences of a benchmark's rows to their baselines, recomputed from its results.json: mAP and TIDE's
errors per seed, with 95% t-intervals (the table the report of a current run ends with).

    python benchmarks/paired.py benchmarks/results/bench_dicod/results.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastdiode.demo.run import add_paired_differences, format_paired_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a digits benchmark's results.json")
    args = parser.parse_args()
    table = json.loads(Path(args.results).read_text())["rows"]
    add_paired_differences(table)
    print(format_paired_table(table))


if __name__ == "__main__":
    main()
