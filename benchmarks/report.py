"""Turn a pytest-benchmark JSON of fastdiode-vs-reference pairs into a markdown table of ratios.

    python benchmarks/report.py RESULTS.json RESULTS.md
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

# Speed-up targets of the issues, by the benchmark's name (before the parameter).
TARGETS = {"test_bn_stat_loss": 3.0, "test_tv_prior": 5.0, "test_augment": 2.0}


def main(src: str, dst: str) -> None:
    data = json.loads(Path(src).read_text())
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        groups[bench["name"].split("[")[0]][bench["params"]["impl"]] = bench
    machine, commit = data["machine_info"], data.get("commit_info", {})
    lines = [
        "# CPU microbenchmarks: fastdiode vs the reference-style code (same run)",
        "",
        f"Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
        f"{machine.get('cpu', {}).get('count', '?')} cores, Python {machine.get('python_version')}; "
        f"commit {commit.get('id', '?')[:10]}{' (dirty)' if commit.get('dirty') else ''}; {data['datetime']}.",
        "Medians over 60 rounds; ratio = reference-style median / fastdiode median.",
        "",
        "| benchmark | reference-style (ms) | fastdiode (ms) | speed-up | target | met |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for name, pair in groups.items():
        if set(pair) != {"fastdiode", "reference_style"}:
            continue
        fused, base = pair["fastdiode"]["stats"]["median"], pair["reference_style"]["stats"]["median"]
        ratio, target = base / fused, TARGETS.get(name)
        met = "—" if target is None else ("yes" if ratio >= target else "**no**")
        lines.append(f"| {pair['fastdiode']['group']} | {base * 1e3:.3f} | {fused * 1e3:.3f} | {ratio:.2f}x | "
                     f"{'' if target is None else f'{target:g}x'} | {met} |")
    Path(dst).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:3])
