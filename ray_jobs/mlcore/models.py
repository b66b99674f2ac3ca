"""Models: the MLP (input-256-128-classes, ReLU), a small CNN, and ResNet-18.

A model is fully described by a `ModelSpec`, which checkpoints store so that the
serving app can rebuild the same network without the training flags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mlcore.errors import JobInputError

MODELS = ("mlp", "cnn", "resnet18")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    image_shape: tuple[int, int, int]
    num_classes: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(
            name=str(d["name"]),
            image_shape=tuple(int(v) for v in d["image_shape"]),
            num_classes=int(d["num_classes"]),
        )

    @property
    def num_features(self) -> int:
        c, h, w = self.image_shape
        return c * h * w


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, 256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; works for 8x8 up to 32x32 inputs."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(spec: ModelSpec) -> nn.Module:
    channels = spec.image_shape[0]
    if spec.name == "mlp":
        return MLP(spec.num_features, spec.num_classes)
    if spec.name == "cnn":
        return SmallCNN(channels, spec.num_classes)
    if spec.name == "resnet18":
        from torchvision.models import resnet18

        model = resnet18(weights=None, num_classes=spec.num_classes)
        if channels != 3:
            model.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        return model
    raise JobInputError(
        "--model", f"unknown model {spec.name!r}; choose one of {', '.join(MODELS)}"
    )
