#!/usr/bin/env python3
"""Open N idle HTTP/1.1 keep-alive connections to one address and hold them, for bench/run.sh.

Each connection sends one `GET PATH` (keep-alive), reads the whole response, then stays open
and idle. When all are open the script prints `open N failed F` and `READY` on stdout and waits
for SIGUSR1 (or SIGTERM, or --max-hold seconds); then it prints `alive K`, the connections the
server has not closed meanwhile, closes them all and exits 0. Exits 1 when fewer than N opened.

The caller measures the server's memory between READY and SIGUSR1. Standard library only.
"""

import argparse
import asyncio
import resource
import signal
import sys


def raise_nofile(need):
    """Raise the soft open-files limit as far as the hard limit allows; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def read_response(reader):
    """Reads one response (Content-Length or chunked body); returns the status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower().endswith("chunked"):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # chunk data and its CRLF
            if size == 0:
                break
    return status


async def open_one(host, port, request, timeout):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(request)
        status = await asyncio.wait_for(read_response(reader), timeout)
    except BaseException:
        writer.close()
        raise
    if status != 200:
        writer.close()
        raise RuntimeError(f"status {status}")
    return reader, writer


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, required=True, help="connections to open")
    ap.add_argument("--path", default="/")
    ap.add_argument("--parallel", type=int, default=200, help="connections being opened at once")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per connect + response")
    ap.add_argument("--max-hold", type=float, default=600.0, help="give up waiting for SIGUSR1")
    args = ap.parse_args()

    limit = raise_nofile(args.conns + 64)
    if limit < args.conns + 16:
        print(f"idle_conns: open-files limit {limit} is too low for {args.conns} connections "
              f"(raise the hard limit, or lower --conns)", file=sys.stderr)
        return 2

    request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
               "User-Agent: herd-bench-idle\r\n\r\n").encode()
    conns, errors = [], {}
    sem = asyncio.Semaphore(args.parallel)
    # Handlers before READY: the caller may signal as soon as it reads READY.
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)

    async def one():
        async with sem:
            try:
                conns.append(await open_one(args.host, args.port, request, args.timeout))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, RuntimeError, ValueError, IndexError) as e:
                key = f"{type(e).__name__}: {e}"[:120]
                errors[key] = errors.get(key, 0) + 1

    await asyncio.gather(*(one() for _ in range(args.conns)))
    failed = args.conns - len(conns)
    print(f"open {len(conns)} failed {failed}", flush=True)
    for msg, n in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
        print(f"idle_conns: {n} x {msg}", file=sys.stderr)
    print("READY", flush=True)
    try:
        await asyncio.wait_for(done.wait(), args.max_hold)
    except asyncio.TimeoutError:
        print(f"idle_conns: no SIGUSR1 within {args.max_hold}s", file=sys.stderr)
    # The event loop kept reading every socket while idle, so a connection the server closed
    # has seen its EOF by now.
    alive = sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())
    print(f"alive {alive}", flush=True)
    for _, w in conns:
        w.close()
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
