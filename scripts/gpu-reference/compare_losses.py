#!/usr/bin/env python3
"""Compares the loss records of a run (metrics.jsonl: `{"kind": "train", "step", "loss"}`
every 10 steps, each the mean of its 10 steps) with a committed reference curve
(fmnist_cpu_losses.json: the same job on the CPU), on means over windows of
`window_records` records, against the reference's stated tolerance (the file says why).

    compare_losses.py RUN/metrics.jsonl fmnist_cpu_losses.json

Prints the largest relative difference of the window means and exits 1 when it is above the
tolerance (2 when nothing compares)."""

import json
import sys


def main():
    run_path, ref_path = sys.argv[1:3]
    ref = json.load(open(ref_path))
    run = {}
    for line in open(run_path):
        r = json.loads(line)
        if r.get("kind") == "train":
            run[r["step"]] = r["loss"]
    common = [(s, l) for s, l in zip(ref["steps"], ref["loss"]) if s in run]
    if not common:
        print("no common steps between the run and the reference")
        sys.exit(2)
    w = ref.get("window_records", 1)
    worst, at = 0.0, None
    for i in range(0, len(common), w):
        part = common[i:i + w]
        cpu = sum(l for _, l in part) / len(part)
        gpu = sum(run[s] for s, _ in part) / len(part)
        d = abs(gpu - cpu) / abs(cpu)
        if d >= worst:
            worst, at = d, (part[0][0], part[-1][0])
    tol = ref["tolerance"]
    last = common[-1][0]
    print(f"loss vs the CPU run, means of {w} records: largest relative difference {worst:.4f} "
          f"(steps {at[0]}-{at[1]}; tolerance {tol}); step {last}: GPU {run[last]:.4f}, "
          f"CPU {dict(common)[last]:.4f}: {'PASS' if worst <= tol else 'FAIL'}")
    sys.exit(0 if worst <= tol else 1)


if __name__ == "__main__":
    main()
