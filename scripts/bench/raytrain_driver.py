"""A fresh Ray Train driver for the benchmark: `train.py`'s main, unchanged.

    PYTHONPATH=ray_jobs:. python -m scripts.bench.raytrain_driver \\
        [--own-cluster DIR [--lean]] -- <train.py args>

Without --own-cluster the driver joins the cluster named by $RAY_ADDRESS (what
`python train.py` does next to a running head). With it, the driver starts its
own local cluster in temp dir DIR with 2 CPUs, as `python train.py` does on a
machine without one; --lean starts that cluster without the dashboard and
metrics agent processes (see docs/performance.md).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: raytrain_driver [--own-cluster DIR [--lean]] -- ARGS")
        return 2
    cut = argv.index("--")
    opts, train_args = argv[:cut], argv[cut + 1 :]
    import ray

    import train
    from mlcore.marks import mark

    mark("driver_start")
    # The workers import train.py's module as the driver did: from ray_jobs/,
    # found through the PYTHONPATH the benchmark gave (no working_dir upload).
    runtime_env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}}
    if "--own-cluster" in opts:
        ray.init(
            num_cpus=2,
            include_dashboard="--lean" not in opts,
            _temp_dir=opts[opts.index("--own-cluster") + 1],
            log_to_driver=False,
            runtime_env=runtime_env,
        )
    else:
        ray.init(log_to_driver=False, runtime_env=runtime_env)  # $RAY_ADDRESS
    mark("cluster_ready")
    return train.main(train_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
