"""Serving variants of a checkpoint: the folders compress.py writes, loaded for
serving and measuring.

A variant folder is a checkpoint folder (mlcore.checkpointing: its files'
SHA-256 digests in `meta.json`, written last, checked at every load) whose
`meta.json` also says:

- `variant`: `int8` (torchao int8 dynamic quantisation: `model.pt`, a state dict
  of torchao's int8 tensors), `onnx` (`model.onnx`, float32, a dynamic batch
  dimension) or `onnx-int8` (`model.onnx` quantised by ONNX Runtime);
- `model_file`, the model spec, and the source checkpoint's normalisation
  statistics when it had them (the app normalises raw requests with them);
- `source`: the checkpoint it was made from, with the SHA-256 of that
  checkpoint's `meta.json`, so a variant left behind by a replaced checkpoint
  is refused.

compress.py puts them in `<checkpoint>/variants/<variant>/` unless told
otherwise; `resolve` finds them there.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlcore.checkpointing import META_FILE, MODEL_FILE, load_model, local_copy, verify
from mlcore.errors import CheckpointError, JobInputError
from mlcore.models import ModelSpec, build_model
from mlcore.storage import parse_storage

VARIANTS = ("fp32", "int8", "onnx", "onnx-int8")
ONNX_VARIANTS = ("onnx", "onnx-int8")
VARIANTS_DIR = "variants"
ONNX_FILE = "model.onnx"
ONNX_INPUT = "x"
MODEL_FILES = {v: ONNX_FILE if v in ONNX_VARIANTS else MODEL_FILE for v in VARIANTS}


def check_variant(name: str, field: str = "variant") -> str:
    if name not in VARIANTS:
        raise JobInputError(
            field, f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}"
        )
    return name


def variant_of(meta: dict[str, Any]) -> str:
    """The variant a checkpoint folder's metadata describes (fp32: as trained)."""
    return str(meta.get("variant", "fp32"))


def meta_digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


@dataclass(frozen=True)
class Located:
    uri: str  # the folder that holds the variant
    source_digest: str | None  # SHA-256 of the checkpoint's meta.json it must name


def resolve(uri: str, variant: str, field: str = "checkpoint") -> Located:
    """Where `variant` of the checkpoint at `uri` is: `uri` itself when its
    meta.json says it is that variant (or fp32 is asked of a checkpoint), else
    `uri`/variants/<variant>, which must have been made from `uri`."""
    storage = parse_storage(uri, field)
    try:
        with storage.filesystem.open_input_stream(f"{storage.path}/{META_FILE}") as f:
            raw = f.read()
        meta = json.loads(raw)
    except (OSError, ValueError):
        return Located(uri, None)  # load() says what is missing or unreadable
    if variant_of(meta) == variant:
        return Located(storage.uri, None)
    if variant_of(meta) != "fp32":
        raise CheckpointError(
            f"{field} {uri} is the {variant_of(meta)} variant, not {variant}"
        )
    folder = storage.join(VARIANTS_DIR, variant)
    try:
        info = folder.filesystem.get_file_info(folder.path)
    except OSError as exc:
        raise CheckpointError(
            f"{field} {folder.uri} cannot be reached: {exc}"
        ) from None
    if info.type.name != "Directory":
        raise CheckpointError(missing_hint(storage.uri, variant))
    return Located(folder.uri, meta_digest(raw))


def missing_hint(checkpoint: str, variant: str) -> str:
    return (
        f"checkpoint {checkpoint} has no {variant} variant (no "
        f"{VARIANTS_DIR}/{variant}/ in it): make it with python compress.py "
        f"--checkpoint {checkpoint} --variants {variant}"
    )


# ----------------------------------------------------------------- predictors


class Predictor:
    """A loaded variant: logits for float32 inputs of shape (n, C, H, W)."""

    variant: str
    backend: str

    def logits(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class TorchPredictor(Predictor):
    def __init__(self, model, variant: str, device: str = "cpu"):
        self.model, self.variant, self.device = model.to(device), variant, device
        self.backend = "torch" if variant == "fp32" else "torch+torchao"

    def logits(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(x).to(self.device))
            return out.float().cpu().numpy()


class OnnxPredictor(Predictor):
    backend = "onnxruntime"

    def __init__(self, path: str, variant: str, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # The replica's CPUs: one math thread per CPU, no pool besides it.
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )
        self.variant, self.threads = variant, max(1, threads)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {ONNX_INPUT: np.ascontiguousarray(x)})[0]


def load_int8(directory: str, meta: dict[str, Any]):
    """The torchao int8 model of a variant folder (already verified)."""
    import torch
    import torchao.quantization  # noqa: F401 - lets weights_only load its tensors

    model = build_model(ModelSpec.from_dict(meta["model"]))
    state = torch.load(
        os.path.join(directory, MODEL_FILE), map_location="cpu", weights_only=True
    )
    model.load_state_dict(state, assign=True)  # the int8 tensors replace fp32's
    model.requires_grad_(False)
    return model.eval()


def load(
    directory: str,
    variant: str,
    threads: int = 1,
    device: str = "cpu",
    source_digest: str | None = None,
) -> tuple[Predictor, dict[str, Any]]:
    """(predictor, meta) of the `variant` folder `directory`, its digests checked.

    `source_digest`, when given, must be the one the variant names as its
    source's (see `resolve`)."""
    check_variant(variant)
    meta = verify(directory)  # every file against its SHA-256: a tampered one fails
    found = variant_of(meta)
    if found != variant:
        raise CheckpointError(f"{directory} holds the {found} variant, not {variant}")
    if source_digest is not None:
        named = (meta.get("source") or {}).get("meta_sha256")
        if named != source_digest:
            raise CheckpointError(
                f"{directory} was made from another checkpoint than the one it "
                "is in (its source digest differs); make it again with compress.py"
            )
    if variant != "fp32" and device != "cpu":
        raise CheckpointError(f"the {variant} variant runs on the CPU only")
    if variant == "fp32":
        model, meta = load_model(directory)
        return TorchPredictor(model, variant, device), meta
    if variant == "int8":
        return TorchPredictor(load_int8(directory, meta), variant), meta
    path = os.path.join(directory, meta.get("model_file", ONNX_FILE))
    return OnnxPredictor(path, variant, threads), meta


def load_uri(
    uri: str, variant: str, threads: int = 1, device: str = "cpu"
) -> tuple[Predictor, dict[str, Any]]:
    """`load` the `variant` of the checkpoint at `uri` (local or s3://), found by
    `resolve`; only the variant's folder is copied from S3."""
    located = resolve(uri, variant)
    with local_copy(located.uri, "checkpoint") as directory:
        return load(directory, variant, threads, device, located.source_digest)
