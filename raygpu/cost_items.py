"""One priced row of `raygpu plan`'s cost table, shared by every cloud's items
(raygpu/plan.py for AWS and Google Cloud, raygpu/plan_azure.py for Azure)."""

from __future__ import annotations

from typing import Any


def item(
    item: str,
    resource: str,
    unit: float,
    idle: float,
    full: float,
    note: str = "",
    pool_role: str | None = None,
) -> dict[str, Any]:
    return {
        "item": item,
        "resource": resource,
        "unit_usd_hour": round(unit, 6),
        "idle_count": idle,
        "full_count": full,
        "idle_usd_hour": round(unit * idle, 4),
        "full_usd_hour": round(unit * full, 4),
        "note": note,
        "pool_role": pool_role,  # a node group's role: system or gpu
    }
