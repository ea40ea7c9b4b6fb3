"""Turn a pytest-benchmark JSON of fastdiode-vs-reference pairs into a markdown table of ratios.

    python benchmarks/report.py RESULTS.json RESULTS.md
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

# Speed-up targets of the issues, by the benchmark's name (before the parameter).
TARGETS = {"test_bn_stat_loss": 3.0, "test_tv_prior": 5.0, "test_augment": 2.0, "test_hcl": 3.0, "test_dense_kd": 2.0,
           "test_roi_crop": 2.0}
BASELINES = {"reference_style": "reference-style", "unfused": "fastdiode unfused"}


def main(src: str, dst: str) -> None:
    data = json.loads(Path(src).read_text())
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        groups[bench["name"].split("[")[0]][bench["params"]["impl"]] = bench
    machine, commit = data["machine_info"], data.get("commit_info", {})
    lines = [
        "# CPU microbenchmarks: fastdiode vs baselines in the same run",
        "",
        f"Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
        f"{machine.get('cpu', {}).get('count', '?')} cores, Python {machine.get('python_version')}; "
        f"commit {commit.get('id', '?')[:10]}{' (dirty)' if commit.get('dirty') else ''}; {data['datetime']}.",
        "Medians over 60 rounds; speed-up = baseline median / fastdiode median.",
        "",
        "| benchmark | baseline | baseline (ms) | fastdiode (ms) | speed-up | target | met |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    for name, pair in groups.items():
        for baseline in (b for b in BASELINES if b in pair and "fastdiode" in pair):
            fused, base = pair["fastdiode"]["stats"]["median"], pair[baseline]["stats"]["median"]
            ratio = base / fused
            target = TARGETS.get(name) if baseline == "reference_style" else None
            met = "—" if target is None else ("yes" if ratio >= target else "**no**")
            lines.append(f"| {pair['fastdiode']['group']} | {BASELINES[baseline]} | {base * 1e3:.3f} | "
                         f"{fused * 1e3:.3f} | {ratio:.2f}x | {'' if target is None else f'{target:g}x'} | {met} |")
    Path(dst).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:3])
