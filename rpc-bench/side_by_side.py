#!/usr/bin/env python3
"""Runs two rpc-bench binaries in turn, several rounds, and prints the
median of each figure, absolute and as a ratio of raw framing measured in
the same process.

Used to compare a build of an older commit with the current one on the same
machine in the same hour (docs/PERFORMANCE.md says how the binaries are
made). Alternating the runs spreads the machine's drift over both.

    python3 rpc-bench/side_by_side.py OLD_BINARY NEW_BINARY [ROUNDS] [--only raw,toolkit,tonic]
"""

import json
import statistics
import subprocess
import sys

FIGURES = [
    ("W1 calls/s", lambda f: f["w1"]["calls_per_sec"]),
    ("W2 calls/s", lambda f: f["w2"]["calls_per_sec"]),
    ("W3 calls/s", lambda f: f["w3"]["calls_per_sec"]),
    ("W4 64K MiB/s", lambda f: f["w4_64k"]["mib_per_sec"]),
    ("W4 1M MiB/s", lambda f: f["w4_1m"]["mib_per_sec"]),
    # Lower is better: the ratio is inverted so that above 1 is faster.
    ("W5 ms", lambda f: f["w5_ms"]),
]


def run(binary, only):
    out = subprocess.run(
        [binary, "--only", only], check=True, capture_output=True, text=True
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("JSON "))
    return {f["name"]: f for f in json.loads(line[5:])["results"]}


def main():
    args = [a for a in sys.argv[1:]]
    only = "raw,toolkit"
    if "--only" in args:
        i = args.index("--only")
        only = args[i + 1]
        del args[i : i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    binaries = {"old": args[0], "new": args[1]}
    rounds = int(args[2]) if len(args) > 2 else 3
    seen = {label: [] for label in binaries}
    for r in range(rounds):
        for label, binary in binaries.items():
            print(f"round {r + 1}/{rounds}: {label}", file=sys.stderr)
            seen[label].append(run(binary, only))
    names = [n for n in only.split(",") if n != "raw"]
    print(f"medians of {rounds} alternating runs; ratio = figure / raw's in the same run")
    print(f"{'figure':<14}" + "".join(f"{l + ' ' + n:>26}" for l in binaries for n in names))
    for title, get in FIGURES:
        cells = []
        for label in binaries:
            for name in names:
                values = [get(run[name]) for run in seen[label]]
                ratios = [
                    (get(run["raw"]) / get(run[name]))
                    if title.endswith("ms")
                    else (get(run[name]) / get(run["raw"]))
                    for run in seen[label]
                ]
                cells.append(
                    f"{statistics.median(values):>14,.0f} ({statistics.median(ratios):.2f}x)"
                )
        print(f"{title:<14}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
