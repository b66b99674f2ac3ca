"""`make bench`: Ray Train against torchrun, Ray Serve against FastAPI, start-up
cost, the offline plan, and what the allocator settings change.

    python -m scripts.bench            # full run (< 20 min on 2 cores), writes bench/
    python -m scripts.bench --quick    # one round of everything, for development
    python -m scripts.bench --only train,serve --out /tmp/bench

Everything runs on this machine, on 127.0.0.1, in this process tree; every Ray
cluster and server it starts is stopped, also on failure or Ctrl-C. Each pair of
things compared runs alternately (A B A B ...) and every figure is reported as the
median and range over the rounds; ratios are taken run by run within a round.
Results: bench/results.json and bench/results.md (docs/performance.md explains).

This process imports raygpu and the benchmark's modules only; whatever runs
ray_jobs code (training, serving, the models) is a child process whose
PYTHONPATH holds ray_jobs/ and the repository (proc.child_env).

- settings: what runs, with which environment; stats: medians, ranges, ratios;
  marks: reading the runs' timing marks; proc: process control; cpu: CPU
  accounting per group of processes; load: the HTTP load generators.
- commands, training, interleaved: 1. training throughput; startup: 2. time to
  first step and 4. the plan; serving: 3. requests/s and latency; allocator:
  5. page faults with and without the allocator settings.
- report: targets, schema and results.md; cli: the command line.
- Child programs: torchrun_worker, raytrain_driver, fastapi_server,
  serve_deploy, serve_models, allocator_probe.
"""
