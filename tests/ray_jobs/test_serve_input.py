"""The serving app's input validation, in-process: every bad body is a 4xx."""

import json

import numpy as np
import pytest

from serve_app import BadRequest, ServeArgs, parse_instances

F = 64
SHAPE = (1, 8, 8)


def body(obj) -> bytes:
    return json.dumps(obj).encode()


def test_valid_instances_become_float32_rows():
    x = parse_instances(body({"instances": [[1] * F, [0.5] * F]}), F, 10, 1 << 20)
    assert x.shape == (2, F) and x.dtype == np.float32


def test_image_shaped_instances_are_accepted():
    inst = np.zeros((3, *SHAPE)).tolist()
    x = parse_instances(body({"instances": inst}), F, 10, 1 << 20, SHAPE)
    assert x.shape == (3, F)


@pytest.mark.parametrize(
    "inst,got",
    [
        (np.zeros((1, F, 1)), "64x1"),  # 64 one-element lists
        (np.zeros((1, 8, 8)), "8x8"),  # the image without its channel
        (np.zeros((1, 1, 1, F)), "1x1x64"),
        (np.zeros((1, 2, 32)), "2x32"),
    ],
)
def test_instances_nested_other_than_the_image_are_refused(inst, got):
    with pytest.raises(BadRequest) as err:
        parse_instances(body({"instances": inst.tolist()}), F, 10, 1 << 20, SHAPE)
    assert err.value.status == 400
    assert err.value.message == (
        f"each instance must be a flat list of {F} numbers or nested as 1x8x8 "
        f"(got {got})"
    )
    with pytest.raises(BadRequest, match=f"flat list of {F} numbers \\(got {got}"):
        parse_instances(body({"instances": inst.tolist()}), F, 10, 1 << 20)


@pytest.mark.parametrize(
    "raw,status,fragment",
    [
        (b"not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (body([1, 2, 3]), 400, "'instances' is missing"),
        (body({"inputs": [[1] * F]}), 400, "'instances' is missing"),
        (body({"instances": "abc"}), 400, "must be a list"),
        (body({"instances": {"a": 1}}), 400, "must be a list"),
        (body({"instances": []}), 400, "is empty"),
        (body({"instances": [[1] * (F - 1)]}), 400, f"must have {F} features (got 63)"),
        (body({"instances": [1, 2, 3]}), 400, f"must have {F} features"),
        (body({"instances": [[1] * F, [1] * 3]}), 400, f"list of {F} numbers"),
        (body({"instances": [["a"] * F]}), 400, "only numbers"),
        (body({"instances": [[None] * F]}), 400, "only numbers"),
        (body({"instances": [[True] * F]}), 400, "only numbers"),
        (body({"instances": [[{"x": 1}] * F]}), 400, "only numbers"),
        (b'{"instances": [[' + b",".join([b"NaN"] * F) + b"]]}", 400, "finite"),
        (b'{"instances": [[' + b",".join([b"Infinity"] * F) + b"]]}", 400, "finite"),
        (body({"instances": [[1e39] * F]}), 400, "finite"),
        (body({"instances": [[1] * F] * 11}), 400, "more than the maximum of 10"),
        (b"x" * 5000, 413, "larger than 4096 bytes"),
    ],
)
def test_bad_bodies_get_a_clear_4xx(raw, status, fragment):
    with pytest.raises(BadRequest) as err:
        parse_instances(raw, F, 10, 4096)
    assert err.value.status == status
    assert fragment in err.value.message


@pytest.mark.parametrize(
    "args,field",
    [
        ({}, "checkpoint"),
        ({"checkpoint": ""}, "checkpoint"),
        ({"checkpoint": "x", "max_instances": 0}, "max_instances"),
        ({"checkpoint": "x", "max_batch_size": 0}, "max_batch_size"),
        ({"checkpoint": "x", "request_timeout_s": 0}, "request_timeout_s"),
        ({"checkpoint": "x", "num_replicas": 0}, "num_replicas"),
        ({"checkpoint": "x", "num_cpus": -1}, "num_cpus"),
        ({"checkpoint": "x", "variant": "int4"}, "variant"),
        ({"checkpoint": "x", "variant": "onnx", "num_gpus": 1}, "num_gpus to 0"),
    ],
)
def test_serve_args_name_the_bad_field(args, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        ServeArgs(**args)
    assert field in str(err.value)
