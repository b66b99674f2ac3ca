"""Closed-loop HTTP load generators for the benchmark: wrk, or a Python fallback.

Both send the same POST (one instance, float32 binary or JSON) over keep-alive
connections on 127.0.0.1, `concurrency` requests in flight, until `requests`
answers arrived or `seconds` passed, and print one line `RGJSON {...}` with the
count, duration, latency percentiles and errors (serving.one_load runs one as a
child process and reads that line). The Python one is this module, which
imports nothing but the standard library, so its start costs little CPU:

    python -m scripts.bench.load URL BODYFILE CONTENT_TYPE CONCURRENCY REQUESTS SECONDS

`make bench` installs wrk where it can: the Python generator takes more CPU,
which the servers it measures lose.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from urllib.parse import urlsplit

from scripts.bench.stats import percentile

WRK_LUA = r"""
wrk.method = "POST"
wrk.body = "%(body)s"
wrk.headers["Content-Type"] = "%(content_type)s"
wrk.headers["X-Instances"] = "1"
local limit = %(limit)d
local count = 0
function response(status, headers, body)
  count = count + 1
  if count >= limit then wrk.thread:stop() end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RGJSON {"requests": %%d, "duration_s": %%.6f, "p50_ms": %%.3f, ' ..
    '"p99_ms": %%.3f, "mean_ms": %%.3f, "errors": %%d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, latency.mean / 1e3,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def lua_escape(data: bytes) -> str:
    """Bytes as the body of a Lua string literal (decimal escapes)."""
    return "".join(f"\\{b:03d}" for b in data)


def wrk_script(body: bytes, content_type: str, limit: int) -> str:
    return WRK_LUA % {
        "body": lua_escape(body),
        "content_type": content_type,
        "limit": max(1, limit),
    }


def wrk_argv(url: str, script: str, concurrency: int, seconds: float) -> list[str]:
    return [
        wrk_path() or "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        script,
        url,
    ]


def generator_name() -> str:
    path = wrk_path()
    if not path:
        return "python-asyncio (wrk not installed: apt-get install -y wrk)"
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10
        )
        return (out.stdout or out.stderr).split("[")[0].strip() or "wrk"
    except (OSError, subprocess.SubprocessError):
        return "wrk"


async def _python_load(
    url: str,
    body: bytes,
    content_type: str,
    concurrency: int,
    requests: int,
    seconds: float,
) -> dict:
    parts = urlsplit(url)
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
        f"Content-Type: {content_type}\r\nX-Instances: 1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    sent = 0

    async def worker() -> None:
        nonlocal errors, sent
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while sent < requests and time.monotonic() < deadline:
                sent += 1
                t0 = time.perf_counter()
                writer.write(head + body)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    duration = time.perf_counter() - t0
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "duration_s": duration,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "mean_ms": sum(lat) / max(len(lat), 1) * 1e3,
        "errors": errors,
    }


def main(argv: list[str]) -> int:
    url, body_file, content_type, conc, reqs, secs = argv
    with open(body_file, "rb") as f:
        body = f.read()
    out = asyncio.run(
        _python_load(url, body, content_type, int(conc), int(reqs), float(secs))
    )
    print("RGJSON " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
