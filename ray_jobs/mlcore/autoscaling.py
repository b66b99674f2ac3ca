"""Serve autoscaling for the model apps: replicas between a minimum and a maximum,
sized by the requests each replica has in flight.

One model for every app (the classifier and the language model): each app keeps its
own defaults by subclassing with other field defaults, and hands Serve
`to_serve()` as the deployment's `autoscaling_config`. Serve compares the mean of
each replica's ongoing requests over `look_back_period_s` with
`target_ongoing_requests`, and acts once a decision has held for the up- or
downscale delay.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ServeAutoscaling(BaseModel):
    """Replica bounds and the load that moves them (the classifier's defaults)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0, le=1000, description="0 scales to zero")
    max_replicas: int = Field(4, ge=1, le=1000)
    # A batching replica works best with a batch's worth in flight.
    target_ongoing_requests: float = Field(16.0, gt=0.0, le=100_000.0)
    upscale_delay_s: float = Field(10.0, ge=0.0, le=3600.0)
    # Long enough that a pause between bursts does not drop a warm replica.
    downscale_delay_s: float = Field(120.0, ge=0.0, le=86_400.0)
    look_back_period_s: float = Field(30.0, gt=0.0, le=3600.0)
    metrics_interval_s: float = Field(10.0, gt=0.0, le=3600.0)

    @model_validator(mode="after")
    def _bounds(self) -> ServeAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas "
                f"({self.max_replicas})"
            )
        return self

    def to_serve(self) -> dict[str, Any]:
        """The deployment's `autoscaling_config` (Serve's own field names)."""
        return self.model_dump()


def check_replicas(num_replicas: int | None, autoscaling: Any) -> None:
    """An app's arguments give a fixed count or autoscaling bounds, not both."""
    if num_replicas is not None and autoscaling is not None:
        raise ValueError(
            "num_replicas and autoscaling: give a fixed count or autoscaling "
            "bounds, not both"
        )


def replica_options(
    num_replicas: int | None, autoscaling: ServeAutoscaling | None
) -> dict[str, Any]:
    """Serve's deployment options for the replica count (neither: 1 replica)."""
    if autoscaling is not None:
        return {"autoscaling_config": autoscaling.to_serve()}
    return {"num_replicas": num_replicas or 1}
