#!/usr/bin/env python3
"""Does this disk serve concurrent flushes in parallel? Each thread owns a preallocated 64 MiB
file and commits N times: P random 4 KiB page writes, then fdatasync. Prints commits/s and
latency per (pages, threads). Usage: python3 bench/flush_probe.py [DIR] [N]  (DIR on the disk
under test; default ./flush-probe, removed afterwards)."""
import os, random, shutil, sys, threading, time

DIR = sys.argv[1] if len(sys.argv) > 1 else "flush-probe"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1500


def prepare(i):
    fd = os.open(f"{DIR}/f{i}", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"\0" * (64 << 20), 0)
    os.fsync(fd)
    return fd


def worker(fd, pages, lat):
    buf = b"x" * 4096
    for _ in range(N):
        t = time.perf_counter()
        for _ in range(pages):
            os.pwrite(fd, buf, random.randrange(0, (64 << 20) // 4096) * 4096)
        os.fdatasync(fd)
        lat.append(time.perf_counter() - t)
    os.close(fd)


os.makedirs(DIR, exist_ok=True)
try:
    for pages in (1, 13):
        for threads in (1, 2, 4):
            lats = [[] for _ in range(threads)]
            fds = [prepare(i) for i in range(threads)]  # not timed
            ts = [threading.Thread(target=worker, args=(fds[i], pages, lats[i])) for i in range(threads)]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            el = time.perf_counter() - t0
            v = sorted(x for l in lats for x in l)
            p = lambda q: v[int(len(v) * q)] * 1e6
            print(f"pages={pages} threads={threads}: commits/s {len(v) / el:8.0f}  "
                  f"p50 {p(.5):6.0f}us p90 {p(.9):6.0f} p99 {p(.99):6.0f}")
finally:
    shutil.rmtree(DIR, ignore_errors=True)
