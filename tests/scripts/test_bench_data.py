"""scripts/bench/data.py: its pandas baseline does the cleaning prepare.py does."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from scripts.bench.data import dirty_table, pandas_prepare


def test_the_pandas_baseline_drops_what_was_planted(tmp_path):
    csv = tmp_path / "t.csv"
    dirty_table(csv, rows=3000, seed=1)
    kind = np.random.default_rng(1)
    kind.random((3000, 16))
    kind.integers(0, 10, 3000)
    planted = kind.integers(0, 100, 3000)
    result = pandas_prepare(csv, tmp_path / "out", [str(i) for i in range(10)])
    assert result["dropped"]["missing"] == int((planted == 0).sum())
    assert result["dropped"]["non_finite"] == int((planted == 1).sum())
    assert result["dropped"]["unknown_label"] == int((planted == 2).sum())
    copies = (planted == 3) & (np.roll(planted, 1) >= 4)
    copies[0] = False
    assert result["dropped"]["duplicate"] == int(copies.sum()) > 0
    kept = sum(pq.read_table(p).num_rows for p in (tmp_path / "out").rglob("*.parquet"))
    assert kept == result["kept"] == 3000 - sum(result["dropped"].values())
