#!/usr/bin/env python3
"""Compares the loss curves of two runs against the seed-to-seed spread of a third.

    compare_curves.py BASE/metrics.jsonl OTHER/metrics.jsonl NOISE/metrics.jsonl [--window N]

BASE and OTHER differ in one setting (e.g. head_storage f32 vs bf16), BASE and NOISE only in
the seed. Each run's `{"kind": "train", "step", "loss"}` records (each the mean of
`log_period` steps) are averaged over windows of N records (default 5); the script prints, per
window, the relative difference |OTHER - BASE| / BASE and the seed spread |NOISE - BASE| / BASE,
then the largest of each. The tolerance is NOISE's largest difference: the script exits 1 when
OTHER's largest difference is above it (the setting moves the curve further than a change of
seed does), 2 when nothing compares."""

import json
import sys


def losses(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if r.get("kind") == "train":
            out[r["step"]] = r["loss"]
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    window = 5
    if "--window" in sys.argv:
        window = int(sys.argv[sys.argv.index("--window") + 1])
        args = [a for a in args if a != str(window)]
    base, other, noise = (losses(p) for p in args[:3])
    steps = sorted(set(base) & set(other) & set(noise))
    if not steps:
        print("no common steps")
        sys.exit(2)
    worst_other, worst_noise = 0.0, 0.0
    print(f"{'steps':>11} {'base':>9} {'other':>9} {'noise':>9} {'|o-b|/b':>9} {'|n-b|/b':>9}")
    for i in range(0, len(steps), window):
        part = steps[i:i + window]
        mean = lambda run: sum(run[s] for s in part) / len(part)
        b, o, n = mean(base), mean(other), mean(noise)
        do, dn = abs(o - b) / abs(b), abs(n - b) / abs(b)
        worst_other, worst_noise = max(worst_other, do), max(worst_noise, dn)
        print(f"{part[0]:>5}-{part[-1]:<5} {b:9.4f} {o:9.4f} {n:9.4f} {do:9.5f} {dn:9.5f}")
    print(f"largest: other {worst_other:.5f}, seed spread {worst_noise:.5f} "
          f"({len(steps)} records, windows of {window})")
    sys.exit(1 if worst_other > worst_noise else 0)


if __name__ == "__main__":
    main()
