"""Models: the MLP (input-256-128-classes, ReLU), a small CNN, and ResNet-18.

A model is fully described by a `ModelSpec`, which checkpoints store so that the
serving app can rebuild the same network without the training flags. The MLP's
shape can be chosen (tune.py searches it): `width` units in the first hidden
layer, halved in each of the `depth` hidden layers, and dropout after each ReLU;
unset, it is the network above.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mlcore.errors import JobInputError

MODELS = ("mlp", "cnn", "resnet18")
MLP_WIDTH = 256
MLP_DEPTH = 2


@dataclass(frozen=True)
class ModelSpec:
    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    # The MLP's shape; None and 0.0 leave its defaults (MLP_WIDTH, MLP_DEPTH).
    width: int | None = None
    depth: int | None = None
    dropout: float = 0.0

    def to_dict(self) -> dict:
        # Left out when unset, so the default network's meta.json is unchanged.
        d = asdict(self)
        for key, unset in (("width", None), ("depth", None), ("dropout", 0.0)):
            if d[key] == unset:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(
            name=str(d["name"]),
            image_shape=tuple(int(v) for v in d["image_shape"]),
            num_classes=int(d["num_classes"]),
            width=None if d.get("width") is None else int(d["width"]),
            depth=None if d.get("depth") is None else int(d["depth"]),
            dropout=float(d.get("dropout", 0.0)),
        )

    @property
    def num_features(self) -> int:
        c, h, w = self.image_shape
        return c * h * w


def mlp_hidden(width: int, depth: int) -> list[int]:
    """The hidden layers' sizes: `width`, halved `depth - 1` times."""
    for field, value in (("width", width), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise JobInputError(field, f"must be a positive integer (got {value!r})")
    sizes = [width >> i for i in range(depth)]
    if sizes[-1] < 1:
        raise JobInputError(
            "width",
            f"{width} halved over {depth} hidden layers leaves a layer without "
            f"units; use a width of at least {1 << (depth - 1)} or fewer layers",
        )
    return sizes


class MLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        num_classes: int,
        width: int = MLP_WIDTH,
        depth: int = MLP_DEPTH,
        dropout: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise JobInputError("dropout", f"must be in [0, 1) (got {dropout!r})")
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for size in mlp_hidden(width, depth):
            layers += [nn.Linear(prev, size), nn.ReLU()]
            if dropout > 0:  # none at 0: the default network's layer indices stay
                layers.append(nn.Dropout(dropout))
            prev = size
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

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
        return MLP(
            spec.num_features,
            spec.num_classes,
            MLP_WIDTH if spec.width is None else spec.width,
            MLP_DEPTH if spec.depth is None else spec.depth,
            spec.dropout,
        )
    shaped = [k for k in ("width", "depth") if getattr(spec, k) is not None]
    if shaped or spec.dropout:
        field = shaped[0] if shaped else "dropout"
        raise JobInputError(
            field, f"only the mlp takes width, depth and dropout, not {spec.name!r}"
        )
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
