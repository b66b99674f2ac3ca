"""Serving the LM: a KV-cache batching engine and OpenAI's HTTP API over it.

`engine` (Engine, SamplingParams, EngineLimits, run_batch), `kvcache` (the
cached forward pass), `protocol` (OpenAI's request and response shapes, the
chat template), `app` (one serving class per endpoint). The Serve deployment
is the top-level module `lm_serve_app`.
"""
