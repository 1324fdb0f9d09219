#!/usr/bin/env python3
"""Writes the three load traces used to compare herd's autoscaler with HPA's defaults.

Deterministic: every trace uses its own seeded generator, so running this again rewrites the
same files byte for byte. Run from anywhere: `python3 bench/traces/generate.py`.

- step_spike.csv: 1 h at 1 s resolution; 300 rps, a step to 3000 rps at 10 min for 20 min,
  then back to 300 rps; ±3 % noise.
- daily_sine_14d.csv: 14 days at 60 s resolution starting on a Monday at 00:00 UTC; a daily
  sine between ~300 and ~1700 rps (peak at noon), weekends at 60 %, multiplicative Gaussian
  noise (sigma 8 %).
- flash_crowd.csv: 2 h at 1 s resolution; 200 rps, then at 20 min a crowd arrives within about
  a minute (logistic rise to +3800 rps) and leaves slowly (exponential decay, tau 15 min);
  ±5 % noise.
"""

import math
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))


def write(name, rows):
    path = os.path.join(HERE, name)
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write("time,rps\n")
        for t, v in rows:
            f.write(f"{t},{v:.1f}\n")
    print(f"wrote {path} ({len(rows)} rows)")


def step_spike():
    rng = random.Random(1)
    rows = []
    for t in range(3600):
        base = 3000.0 if 600 <= t < 1800 else 300.0
        rows.append((t, base * (1.0 + rng.uniform(-0.03, 0.03))))
    return rows


def daily_sine():
    rng = random.Random(2)
    rows = []
    for minute in range(14 * 1440):
        t = minute * 60
        day = minute // 1440
        phase = (minute % 1440) / 1440.0
        level = 1000.0 + 700.0 * math.sin(2.0 * math.pi * (phase - 0.25))
        if day % 7 in (5, 6):
            level *= 0.6
        rows.append((t, max(0.0, level * (1.0 + rng.gauss(0.0, 0.08)))))
    return rows


def flash_crowd():
    rng = random.Random(3)
    rows = []
    start = 1200.0
    for t in range(7200):
        crowd = 0.0
        if t >= start - 120:
            rise = 1.0 / (1.0 + math.exp(-(t - start) / 8.0))
            decay = math.exp(-max(0.0, t - start - 60.0) / 900.0)
            crowd = 3800.0 * rise * decay
        v = (200.0 + crowd) * (1.0 + rng.uniform(-0.05, 0.05))
        rows.append((t, v))
    return rows


if __name__ == "__main__":
    write("step_spike.csv", step_spike())
    write("daily_sine_14d.csv", daily_sine())
    write("flash_crowd.csv", flash_crowd())
