"""What a user would write instead of the LM app: one uvicorn process serving
one request at a time. The LM benchmark's baseline.

    PYTHONPATH=ray_jobs:. python -m scripts.bench.lmserve_fastapi \\
        --export DIR --port 8011

The same exported model, one torch thread, the same KV-cache forward passes
(lm.serving.kvcache's prefill and decode, one slot) and the same text release
(lm.serving.app.TextAssembler), so what differs from the LM app is batching and
the serving stack alone. An `asyncio.Lock` lets one request decode at a time;
the others wait their turn. `POST /v1/completions` answers OpenAI's stream
(text chunks, a usage chunk when asked, `[DONE]`) or one JSON object; only the
fields the benchmark sends are read. `GET /healthz`.
"""

import argparse
import asyncio
import json
import sys

from raygpu.names import LOOPBACK


def build(export: str, threads: int = 1):
    import torch
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    from lm.checkpoint import load_exported
    from lm.serving.app import TextAssembler
    from lm.serving.kvcache import KVCache, decode, prefill, sample
    from lm.tokenizer import EOT, encode

    torch.set_num_threads(threads)
    model, _ = load_exported(export)
    cache = KVCache(model, 1)
    lock = asyncio.Lock()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    async def tokens(prompt: list[int], max_tokens: int, temperature: float, stop):
        """The request's tokens, one forward pass each, holding the lock."""
        generator = torch.Generator().manual_seed(0)
        async with lock:
            logits = prefill(model, cache, 0, prompt)
            position = len(prompt)
            for i in range(max_tokens):
                token = sample(logits[None], [temperature], [1.0], [generator])[0]
                if token == EOT and stop:
                    return
                yield token
                if i + 1 == max_tokens or position + 1 >= cache.context:
                    return
                logits = decode(model, cache, [0], [token], [position])[0]
                position += 1
                await asyncio.sleep(0)  # let the answer's chunk go out

    def chunk(text: str | None, finish: str | None = None, usage=None) -> bytes:
        choices = (
            [] if usage else [{"index": 0, "text": text or "", "finish_reason": finish}]
        )
        body = {"object": "text_completion", "choices": choices}
        if usage:
            body["usage"] = usage
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await request.json()
        prompt = req["prompt"]
        prompt = encode(prompt) if isinstance(prompt, str) else list(prompt)
        max_tokens = int(req.get("max_tokens", 16))
        temperature = float(req.get("temperature", 1.0))
        stop = not req.get("ignore_eos", False)
        include_usage = (req.get("stream_options") or {}).get("include_usage")

        async def events():
            text, count = TextAssembler([]), 0
            async for token in tokens(prompt, max_tokens, temperature, stop):
                count += 1
                if piece := text.feed(token):
                    yield chunk(piece)
            if tail := text.flush():
                yield chunk(tail)
            yield chunk(None, "length" if count == max_tokens else "stop")
            if include_usage:
                yield chunk(None, usage=usage(count))
            yield b"data: [DONE]\n\n"

        def usage(count: int) -> dict:
            return {
                "prompt_tokens": len(prompt),
                "completion_tokens": count,
                "total_tokens": len(prompt) + count,
            }

        if req.get("stream"):
            return StreamingResponse(events(), media_type="text/event-stream")
        text, count = TextAssembler([]), 0
        parts = []
        async for token in tokens(prompt, max_tokens, temperature, stop):
            count += 1
            parts.append(text.feed(token))
        parts.append(text.flush())
        return JSONResponse(
            {
                "object": "text_completion",
                "choices": [{"index": 0, "text": "".join(parts)}],
                "usage": usage(count),
            }
        )

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def main() -> int:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    app = build(args.export, args.threads)
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
