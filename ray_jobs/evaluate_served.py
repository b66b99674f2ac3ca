"""Send a dataset's test split to a served classifier over HTTP; report accuracy.

    python evaluate_served.py --url http://127.0.0.1:8000 --dataset digits

Posts the test split in batches to `<url>/predict` as `{"instances": [...]}` and
compares the answers with the labels. With --data (a prepared dataset) it sends
that dataset's test split as stored: raw, for the app to normalise. Prints
`served_accuracy=` and, with --output, writes {"served_accuracy", "count",
"predictions"} as JSON. Runs as a Ray job (as `make demo` submits it) or as a
plain script beside the app.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from mlcore.data import DATASETS, load_dataset
from mlcore.errors import JobInputError


def post_json(url: str, payload: dict, timeout_s: float) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def test_split(dataset: str, data: str | None):
    """(x as (n, features), y) of the test split: in memory, or a prepared one's."""
    if data is None:
        test = load_dataset(dataset).test
        return test.x.reshape(len(test.x), -1), test.y
    import numpy as np

    from mlcore import prepared

    found = prepared.open_prepared(data)
    prepared.verify(found, splits=("test",))
    parts = list(prepared.iter_split(found, "test"))
    x = np.concatenate([p[0] for p in parts])
    return x.reshape(len(x), -1), np.concatenate([p[1] for p in parts])


def evaluate(
    url: str, dataset: str, batch: int, timeout_s: float = 30.0, data=None
) -> dict:
    base = url.rstrip("/")
    with urllib.request.urlopen(f"{base}/healthz", timeout=timeout_s) as response:
        if response.status != 200:
            raise JobInputError(f"--url: {base}/healthz answered {response.status}")
    x, y = test_split(dataset, data)
    correct = 0
    served = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        answer = post_json(f"{base}/predict", {"instances": chunk.tolist()}, timeout_s)
        predictions = answer.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(chunk):
            raise JobInputError(
                f"{base}/predict answered {len(predictions or [])} predictions "
                f"for {len(chunk)} instances"
            )
        labels = y[i : i + batch]
        correct += sum(int(p == t) for p, t in zip(predictions, labels, strict=True))
        served += predictions
    return {
        "served_accuracy": correct / len(x),
        "count": int(len(x)),
        "predictions": served,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the app's base URL")
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--data", help="a prepared dataset: send its test split")
    parser.add_argument("--batch", type=int, default=64, help="instances a request")
    parser.add_argument("--output", type=Path, help="write the result here as JSON")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch: must be >= 1")
    try:
        result = evaluate(args.url, args.dataset, args.batch, data=args.data)
    except (urllib.error.URLError, OSError, ValueError, JobInputError) as exc:
        print(f"evaluate_served: {exc}", file=sys.stderr)
        return 1
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result), encoding="utf-8")
    print(f"served_accuracy={result['served_accuracy']:.4f} ({result['count']} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
