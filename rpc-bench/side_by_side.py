#!/usr/bin/env python3
"""Runs two rpc-bench binaries in turn, several rounds, and prints the
median of each figure, absolute and as a ratio of raw framing measured in
the same process.

Used to compare a build of an older commit with the current one on the same
machine in the same hour (docs/PERFORMANCE.md says how the binaries are
made). Alternating the runs spreads the machine's drift over both.

    python3 rpc-bench/side_by_side.py OLD_BINARY NEW_BINARY [ROUNDS] [--only raw,toolkit,tonic]
        [--workloads w3,w4]

`--workloads` needs builds that know it (from 2026-12-02 on); figures of
workloads not run are left out.
"""

import json
import statistics
import subprocess
import sys

# (title, value, whether higher is better): where lower is better the ratio
# is inverted, so that above 1 always means faster than raw.
FIGURES = [
    ("W1 calls/s", lambda f: f["w1"]["calls_per_sec"], True),
    ("W2 calls/s", lambda f: f["w2"]["calls_per_sec"], True),
    ("W3 calls/s", lambda f: f["w3"]["calls_per_sec"], True),
    ("W4 64K MiB/s", lambda f: f["w4_64k"]["mib_per_sec"], True),
    ("W4 1M MiB/s", lambda f: f["w4_1m"]["mib_per_sec"], True),
    ("W5 ms", lambda f: f["w5_ms"], False),
    # Builds from before streams (2026-12-02) have none: their rows are left out.
    ("W6 items/s", lambda f: f.get("w6_items_per_sec", 0), True),
    ("W7 MiB/s", lambda f: f.get("w7_mib_per_sec", 0), True),
    ("W8 items/s", lambda f: f.get("w8_items_per_sec", 0), True),
]


def ratios(runs, name, get, higher_is_better):
    """Each run's figure of `name` as a ratio to raw's (above 1: faster)."""
    return [
        get(figures[name]) / get(figures["raw"])
        if higher_is_better
        else get(figures["raw"]) / get(figures[name])
        for figures in runs
    ]


def run(binary, only, extra):
    out = subprocess.run(
        [binary, "--only", only, *extra], check=True, capture_output=True, text=True
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("JSON "))
    return {f["name"]: f for f in json.loads(line[5:])["results"]}


def main():
    args = list(sys.argv[1:])
    only = "raw,toolkit"
    if "--only" in args:
        i = args.index("--only")
        only = args[i + 1]
        del args[i : i + 2]
    extra = []
    if "--workloads" in args:
        i = args.index("--workloads")
        extra = args[i : i + 2]
        del args[i : i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    binaries = {"old": args[0], "new": args[1]}
    rounds = int(args[2]) if len(args) > 2 else 3
    seen = {label: [] for label in binaries}
    for r in range(rounds):
        for label, binary in binaries.items():
            print(f"round {r + 1}/{rounds}: {label}", file=sys.stderr)
            seen[label].append(run(binary, only, extra))
    names = [n for n in only.split(",") if n != "raw"]
    print(f"medians of {rounds} alternating runs; ratio = figure / raw's in the same run")
    print(f"{'figure':<14}" + "".join(f"{l + ' ' + n:>26}" for l in binaries for n in names))

    def median_cell(runs, name, get, higher_is_better):
        value = statistics.median(get(figures[name]) for figures in runs)
        ratio = statistics.median(ratios(runs, name, get, higher_is_better))
        return f"{value:>14,.0f} ({ratio:.2f}x)"

    def range_cell(runs, name, get, higher_is_better):
        each = ratios(runs, name, get, higher_is_better)
        return f"{min(each):.2f}-{max(each):.2f}"

    rows(seen, names, median_cell)
    # The spread says how far a median can be trusted on a noisy machine.
    print("ratio to raw, lowest-highest of the runs")
    rows(seen, names, range_cell)


def rows(seen, names, cell):
    """A row per figure that raw has, a cell per build and implementation."""
    for title, get, higher_is_better in FIGURES:
        if all(get(f["raw"]) == 0 for runs in seen.values() for f in runs):
            continue
        cells = []
        for runs in seen.values():
            for name in names:
                # A build that lacks the figure (made before it existed).
                if any(get(figures["raw"]) == 0 for figures in runs):
                    cells.append("-")
                else:
                    cells.append(cell(runs, name, get, higher_is_better))
        print(f"{title:<14}" + "".join(f"{c:>26}" for c in cells))

if __name__ == "__main__":
    main()
