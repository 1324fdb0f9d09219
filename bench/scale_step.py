#!/usr/bin/env python3
"""Time from a load step to the first new instance serving traffic, for real.

Starts `target/release/herd` with demo-app instances (min 1, max 6, target concurrency 4,
as in the autoscaler acceptance test), waits for one ready instance, then switches on
24 concurrent clients of /sleep?ms=50 and polls the admin API every 10 ms. Prints, per run:
  - first_new_serving: load start -> a second instance has answered a request through herd
  - four_ready:        load start -> 4 instances ready
Repeats RUNS times (default 5) and prints the median. Loopback only; bounded in time.
Usage: cargo build --release --workspace && python3 bench/scale_step.py
"""
import json, os, statistics, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERD = os.path.join(ROOT, "target", "release", "herd")
DEMO = os.path.join(ROOT, "target", "release", "demo-app")
RUNS = int(os.environ.get("RUNS", "5"))
GW, ADMIN = 18480, 19480

CONFIG = f"""
[gateway]
listen = "127.0.0.1:{GW}"
[admin]
listen = "127.0.0.1:{ADMIN}"
[[app]]
name = "web"
command = ["{DEMO}"]
port_range = "26000-26050"
[app.health]
path = "/health"
interval = "1s"
fastinter = "50ms"
rise = 1
[app.scaling]
min = 1
max = 6
target = {{ concurrency = 4 }}
scale_down = {{ window = "5s" }}
"""


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def status():
    return json.loads(get(f"http://127.0.0.1:{ADMIN}/cluster/status"))["apps"][0]["instances"]


def one_run(workdir):
    cfg = os.path.join(workdir, "herd.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG)
    herd = subprocess.Popen([HERD, "up", "-c", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                inst = status()
                if len(inst) == 1 and inst[0]["state"] == "ready":
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("herd did not become ready")
        first_id = status()[0]["id"]
        stop = threading.Event()

        def client():
            while not stop.is_set():
                try:
                    get(f"http://127.0.0.1:{GW}/sleep?ms=50")
                except OSError:
                    pass

        threads = [threading.Thread(target=client, daemon=True) for _ in range(24)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        first_new = four_ready = None
        while time.monotonic() - t0 < 15 and (first_new is None or four_ready is None):
            inst = status()
            now = time.monotonic() - t0
            if first_new is None and any(i["id"] != first_id and i["requests_total"] > 0 for i in inst):
                first_new = now
            if four_ready is None and sum(i["state"] == "ready" for i in inst) >= 4:
                four_ready = now
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(timeout=5)
        return first_new, four_ready
    finally:
        herd.terminate()
        herd.wait(timeout=15)


def main():
    for b in (HERD, DEMO):
        if not os.path.exists(b):
            sys.exit(f"{b} is missing: run `cargo build --release --workspace` first")
    firsts, fours = [], []
    with tempfile.TemporaryDirectory() as d:
        for i in range(RUNS):
            first_new, four_ready = one_run(d)
            print(f"run {i + 1}: first new instance serving after {first_new:.3f} s, 4 ready after {four_ready:.3f} s")
            firsts.append(first_new)
            fours.append(four_ready)
    print(f"median over {RUNS} runs: first new instance serving {statistics.median(firsts):.3f} s, "
          f"4 instances ready {statistics.median(fours):.3f} s (scaler interval 1 s, health fastinter 50 ms)")


if __name__ == "__main__":
    main()
