#!/usr/bin/env python3
"""Time of one prefix and one tag invalidation of N cache keys through herd's services API,
on the embedded store. Starts its own herd (target/release/herd, or HERD=path) on loopback
ports, fills the namespace with N keys (4 concurrent writers), times the invalidation call,
and stops herd. Prints one line per (N, kind).

    python3 bench/cache_invalidate.py            # N = 1000, 3000, 6000
    HERD=/path/to/herd python3 bench/cache_invalidate.py 500 5000
"""

import concurrent.futures as cf
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

TOKEN = "bench-token-0123456789abcdef"
PORT = int(os.environ.get("SERVICES_PORT", "19491"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERD = os.environ.get("HERD", os.path.join(ROOT, "target/release/herd"))
HEADERS = {"authorization": f"Bearer {TOKEN}"}


def call(method, path, body=b""):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    c.request(method, path, body=body, headers=HEADERS)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def fill(n):
    def put(i):
        return call("PUT", f"/v1/cache/bulk/u:{i}?ttl=1h&tags=t", b"v")[0]

    with cf.ThreadPoolExecutor(4) as ex:
        codes = set(ex.map(put, range(n)))
    assert codes == {204}, codes


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 3000, 6000]
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "herd.toml")
        with open(cfg, "w") as f:
            f.write(
                f'[gateway]\nlisten = "127.0.0.1:{PORT + 1}"\n[admin]\nlisten = "127.0.0.1:{PORT + 2}"\n'
                f'[services]\nlisten = "127.0.0.1:{PORT}"\ntoken = "{TOKEN}"\n'
                f'[store]\npath = "{d}/store.redb"\n[[app]]\nname = "none"\nservers = ["127.0.0.1:9"]\n'
            )
        herd = subprocess.Popen([HERD, "up", "-c", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 20
            while True:
                try:
                    if call("GET", "/health")[0] == 200:
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise SystemExit("herd did not start")
                time.sleep(0.1)
            for n in sizes:
                for kind, body in (("prefix", {"prefix": "u:"}), ("tag", {"tag": "t"})):
                    fill(n)
                    t = time.time()
                    code, data = call("POST", "/v1/cache/bulk/invalidate", json.dumps(body).encode())
                    took = time.time() - t
                    print(f"{n:>6} keys  {kind:<6} {took * 1000:9.1f} ms  {code} {data.decode()}")
        finally:
            herd.send_signal(signal.SIGTERM)
            herd.wait(timeout=30)


if __name__ == "__main__":
    main()
