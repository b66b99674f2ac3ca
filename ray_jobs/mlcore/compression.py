"""Making the serving variants of a checkpoint (mlcore.variants describes them).

- int8: torchao's int8 dynamic-activation/int8-weight quantisation
  (`quantize_` with `Int8DynamicActivationInt8WeightConfig`), which replaces the
  weights of Linear layers and leaves every other layer in fp32;
- onnx: `torch.onnx.export` (the torch.export-based exporter) with a dynamic
  batch dimension, checked against torch at batch 1 and 7 before it is kept;
- onnx-int8: that graph quantised by ONNX Runtime: statically (QDQ, int8
  weights per channel, uint8 activations calibrated on training rows) when the
  model has convolutions, which dynamic quantisation leaves in fp32; dynamically
  (int8 weights, activations quantised per batch) when it is Linear layers only.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import tempfile
from typing import Any

import numpy as np
import torch
from torch import nn

from mlcore.checkpointing import write_meta
from mlcore.errors import CheckpointError, JobInputError
from mlcore.models import ModelSpec
from mlcore.variants import MODEL_FILES, ONNX_FILE, ONNX_INPUT, ONNX_VARIANTS

# torchao's int8 configs quantise Linear layers only: a model whose weights are
# mostly elsewhere (convolutions) would come out nearly as large and no faster.
INT8_MIN_LINEAR_SHARE = 0.5
# ONNX against torch on the same rows: float32 kernels differ in summation order.
EXPORT_ATOL = 1e-3


def linear_share(model: nn.Module) -> float:
    """Share of the model's weight elements that sit in nn.Linear layers."""
    total = sum(p.numel() for p in model.parameters())
    linear = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, nn.Linear)
        for p in m.parameters(recurse=False)
    )
    return linear / max(total, 1)


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def refusal(variant: str, model: nn.Module, spec: ModelSpec) -> str | None:
    """Why `model` cannot take `variant` (None when it can)."""
    if variant == "int8":
        share = linear_share(model)
        if share < INT8_MIN_LINEAR_SHARE:
            return (
                f"int8: torchao quantises Linear layers only, which hold "
                f"{share:.0%} of the {spec.name}'s weights (the rest, convolutions, "
                "would stay fp32); ask for onnx-int8, which quantises them too"
            )
    return None


def check_requested(requested: list[str], model: nn.Module, spec: ModelSpec) -> None:
    """Every variant asked for by name must suit the model (--variants)."""
    for variant in requested:
        why = refusal(variant, model, spec)
        if why:
            raise JobInputError("--variants", why)


# --------------------------------------------------------------------- makers


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with torchao's int8 dynamic-activation,
    int8-weight Linear layers (every other layer fp32). CPU kernels."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantised = copy.deepcopy(model).eval()
    quantize_(quantised, Int8DynamicActivationInt8WeightConfig())
    return quantised


def make_int8(model: nn.Module, folder: str) -> None:
    quantised = quantize_int8(model)
    state = {k: v.detach() for k, v in quantised.state_dict().items()}
    torch.save(state, os.path.join(folder, MODEL_FILES["int8"]))


def export_onnx(model: nn.Module, shape: tuple[int, ...], path: str) -> None:
    """The model as ONNX with a dynamic batch dimension (input `x`, `logits`),
    one self-contained file; checked against torch at batch 1 and 7."""
    import onnxruntime as ort

    model = copy.deepcopy(model).eval()
    example = torch.zeros(2, *shape)
    batch = torch.export.Dim("batch", min=1)
    # The exporter reports each stage on stdout: not the job's output.
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            model,
            (example,),
            path,
            dynamo=True,
            external_data=False,
            input_names=[ONNX_INPUT],
            output_names=["logits"],
            dynamic_shapes={"x": {0: batch}},
        )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for n in (1, 7):
        x = rng.standard_normal((n, *shape), dtype=np.float32)
        got = session.run(None, {ONNX_INPUT: x})[0]
        with torch.inference_mode():
            want = model(torch.from_numpy(x)).numpy()
        if got.shape != want.shape or not np.allclose(got, want, atol=EXPORT_ATOL):
            raise CheckpointError(
                f"the ONNX export disagrees with torch at batch {n} "
                f"(max difference {np.abs(got - want).max():.3g})"
            )


def quantize_onnx(
    src: str, dst: str, calibration: np.ndarray | None, conv: bool
) -> dict[str, Any]:
    """ONNX Runtime int8 of the float graph `src` into `dst`; how it was done."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="rg-onnxq-") as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(src, pre)  # shape inference and graph fusions first
        if not conv:
            quantize_dynamic(pre, dst, weight_type=QuantType.QInt8)
            return {"method": "dynamic", "weights": "int8"}
        if calibration is None or not len(calibration):
            raise CheckpointError("onnx-int8 of a CNN needs calibration rows")

        class Reader(CalibrationDataReader):
            def __init__(self, rows: np.ndarray, batch: int = 32):
                self.batches = iter(
                    {ONNX_INPUT: rows[i : i + batch]}
                    for i in range(0, len(rows), batch)
                )

            def get_next(self):
                return next(self.batches, None)

        reader = Reader(calibration.astype(np.float32, copy=False))
        quantize_static(
            pre,
            dst,
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )
    return {
        "method": "static",
        "format": "QDQ",
        "weights": "int8 per channel",
        "activations": "uint8",
        "calibration_rows": int(len(calibration)),
    }


def write_variant(
    out_dir: str,
    variant: str,
    model: nn.Module,
    source_meta: dict[str, Any],
    source: dict[str, Any],
    calibration: np.ndarray | None = None,
    onnx_fp32: str | None = None,
) -> str:
    """Make `variant` of `model` into `out_dir`/<variant>/ (replacing what is
    there) in the checkpoint format; returns the folder. `onnx_fp32`: the
    model's export_onnx file when the caller has one (it is slow to make)."""
    spec = ModelSpec.from_dict(source_meta["model"])
    folder = os.path.join(out_dir, variant)
    work = folder + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    extra: dict[str, Any] = {}
    if variant == "int8":
        make_int8(model, work)
        extra["quantisation"] = {"library": "torchao", "config": "int8 dyn/int8"}
    elif variant in ONNX_VARIANTS:
        path = os.path.join(work, ONNX_FILE)
        with tempfile.TemporaryDirectory(prefix="rg-onnx-") as tmp:
            fp32 = onnx_fp32 or os.path.join(tmp, ONNX_FILE)
            if onnx_fp32 is None:
                export_onnx(model, spec.image_shape, fp32)
            if variant == "onnx":
                shutil.copyfile(fp32, path)
            else:
                extra["quantisation"] = {
                    "library": "onnxruntime",
                    **quantize_onnx(fp32, path, calibration, has_conv(model)),
                }
    else:
        raise JobInputError("--variants", f"{variant!r} is not a made variant")
    meta = {
        "variant": variant,
        "model_file": MODEL_FILES[variant],
        "model": spec.to_dict(),
        "epoch": source_meta.get("epoch"),
        "source": source,
        **extra,
    }
    for key in ("normalisation", "data"):  # what serving needs of the source
        if key in source_meta:
            meta[key] = source_meta[key]
    write_meta(work, [MODEL_FILES[variant]], meta)
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(work, folder)  # a folder that exists is a whole variant
    return folder
