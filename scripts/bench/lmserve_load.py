"""The LM benchmark's load generator: closed-loop streaming completions over raw
HTTP/1.1 and server-sent events, each token's arrival timestamped.

    python -m scripts.bench.lmserve_load URL BODYFILE CONCURRENCY SECONDS

`CONCURRENCY` clients on keep-alive connections to 127.0.0.1 each POST the body
(an OpenAI completions request with `stream` and `stream_options.include_usage`)
again as soon as the previous answer ends, until `SECONDS` have passed; the
answers then in flight finish. It prints one line `RGJSON {...}`: the requests,
their tokens (each answer's `usage.completion_tokens`), tokens/s over the whole
span, time to first token (the first chunk with text) and time per output token
percentiles, errors, and the generator's own CPU seconds. Standard library
only: asyncio streams, so the client costs little CPU beside the servers.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from scripts.bench.stats import percentile


class SSEParser:
    """Bytes of an event stream in, the `data:` payloads of whole events out."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[str]:
        self._buf += data.replace(b"\r\n", b"\n")
        events = []
        while b"\n\n" in self._buf:
            raw, self._buf = self._buf.split(b"\n\n", 1)
            lines = [x[5:].lstrip() for x in raw.split(b"\n") if x.startswith(b"data:")]
            if lines:
                events.append(b"\n".join(lines).decode())
        return events


@dataclass
class Record:
    """One request: when it was sent, when each piece of text arrived (seconds
    on the perf counter) with its bytes (one token a byte: the byte-level
    tokenizer), the usage the server reported, and the outcome."""

    start: float
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    end: float = 0.0
    completion_tokens: int | None = None
    error: str | None = None

    def on_event(self, payload: str, now: float) -> bool:
        """Take one event; True once the stream is done."""
        if payload == "[DONE]":
            return True
        event = json.loads(payload)
        if "error" in event:
            self.error = str(event["error"].get("message", event["error"]))
            return False
        for choice in event.get("choices") or []:
            text = choice.get("text") or (choice.get("delta") or {}).get("content")
            if text:
                self.arrivals.append((now, len(text.encode())))
        if event.get("usage"):
            self.completion_tokens = int(event["usage"]["completion_tokens"])
        return False

    @property
    def ttft(self) -> float | None:
        return self.arrivals[0][0] - self.start if self.arrivals else None

    @property
    def tpot(self) -> float | None:
        """Seconds per output token after the first."""
        seen = sum(n for _, n in self.arrivals)
        if seen < 2:
            return None
        return (self.arrivals[-1][0] - self.arrivals[0][0]) / (seen - 1)


def summarise(records: list[Record], duration_s: float, cpu_s: float) -> dict:
    """The figures of one load from its requests."""
    ok = [r for r in records if r.error is None and r.completion_tokens is not None]
    tokens = sum(r.completion_tokens for r in ok)
    ttft = sorted(r.ttft for r in ok if r.ttft is not None)
    tpot = sorted(r.tpot for r in ok if r.tpot is not None)
    return {
        "requests": len(ok),
        "errors": len(records) - len(ok),
        "first_error": next((r.error for r in records if r.error), None),
        "tokens": tokens,
        "tokens_seen": sum(n for r in ok for _, n in r.arrivals),
        "duration_s": round(duration_s, 4),
        "tokens_per_s": tokens / duration_s if duration_s > 0 else 0.0,
        "ttft_p50_ms": percentile(ttft, 50) * 1e3,
        "ttft_p99_ms": percentile(ttft, 99) * 1e3,
        "tpot_p50_ms": percentile(tpot, 50) * 1e3,
        "generator_cpu_s": round(cpu_s, 3),
    }


async def _read_headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def one_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> Record:
    """Send one request on an open connection and read its answer whole."""
    rec = Record(start=time.perf_counter())
    writer.write(request)
    status, headers = await _read_headers(reader)
    parser = SSEParser()
    done = False

    def take(data: bytes) -> None:
        nonlocal done
        now = time.perf_counter()
        for payload in parser.feed(data):
            done = rec.on_event(payload, now) or done

    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()  # the CRLF after the last chunk
                break
            chunk = await reader.readexactly(size + 2)
            if status == 200:
                take(chunk[:-2])
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if status == 200:
            take(body)
    rec.end = time.perf_counter()
    if status != 200:
        rec.error = f"HTTP {status}"
    elif not done and rec.error is None:
        rec.error = "the stream ended without [DONE]"
    return rec


async def run_load(url: str, body: bytes, concurrency: int, seconds: float) -> dict:
    parts = urlsplit(url)
    request = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
        f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    records: list[Record] = []
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while time.perf_counter() < deadline:
                records.append(await one_request(reader, writer, request))
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            # counted as an error; this client stops (its connection is gone)
            records.append(Record(time.perf_counter(), error=repr(exc)))
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    duration = time.perf_counter() - t0
    return summarise(records, duration, time.process_time() - cpu0)


def main(argv: list[str]) -> int:
    url, body_file, concurrency, seconds = argv
    with open(body_file, "rb") as f:
        body = f.read()
    out = asyncio.run(run_load(url, body, int(concurrency), float(seconds)))
    print("RGJSON " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
