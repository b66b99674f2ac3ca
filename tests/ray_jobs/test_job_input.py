"""Every flag of train.py and every argument of the serving app is validated.

Bad input is refused before anything starts: train.py exits with argparse's code 2
and a one-line message naming the flag; the serving app's arguments raise a
pydantic ValidationError naming the field. No Ray cluster is needed.
"""

import os

import pytest
from pydantic import ValidationError

import serve_app
import train
from serve_app import ServeArgs

GOOD = ["--storage-path", "/tmp/raygpu-input-test", "--run-name", "ok"]


def test_the_defaults_and_a_typical_command_line_are_accepted():
    args = train.parse_args(GOOD)
    assert (args.num_workers, args.epochs, args.batch_size) == (2, 10, 64)
    assert (args.max_failures, args.keep_checkpoints) == (3, 2)
    s3 = train.parse_args(["--storage-path", "s3://my-bucket/runs", "--run-name", "x"])
    assert s3.storage_path == "s3://my-bucket/runs"


@pytest.mark.parametrize(
    "argv,flag,fragment",
    [
        (["--num-workers", "0"], "--num-workers", "positive"),
        (["--num-workers", "-2"], "--num-workers", "positive"),
        (["--num-workers", "two"], "--num-workers", "invalid int value"),
        (["--epochs", "0"], "--epochs", "positive"),
        (["--epochs", "-1"], "--epochs", "positive"),
        (["--epochs", "1.5"], "--epochs", "invalid int value"),
        (["--batch-size", "0"], "--batch-size", "positive"),
        (["--batch-size", "-64"], "--batch-size", "positive"),
        (
            ["--num-workers", "4", "--batch-size", "3"],
            "--batch-size",
            "at least the number of workers (4)",
        ),
        (["--cpus-per-worker", "0"], "--cpus-per-worker", "positive"),
        (["--lr", "0"], "--lr", "positive finite"),
        (["--lr", "-0.1"], "--lr", "positive finite"),
        (["--lr", "nan"], "--lr", "positive finite"),
        (["--lr", "inf"], "--lr", "positive finite"),
        (["--dataset", "imagenet"], "--dataset", "choose one of digits, mnist"),
        (["--model", "gpt"], "--model", "choose one of mlp, cnn"),
        (["--precision", "fp8"], "--precision", "choose one of auto, fp32, bf16"),
        (["--max-failures", "-2"], "--max-failures", "-1 (unlimited) or >= 0"),
        (["--keep-checkpoints", "0"], "--keep-checkpoints", "positive"),
        (["--run-name", "../escape"], "--run-name", "letters, digits"),
        (["--run-name", "a b"], "--run-name", "letters, digits"),
        (["--storage-path", ""], "--storage-path", "local folder or an s3://"),
        (["--storage-path", "  "], "--storage-path", "local folder or an s3://"),
        (["--storage-path", "hdfs://nn/x"], "--storage-path", "unsupported scheme"),
        (["--storage-path", "http://h/x"], "--storage-path", "unsupported scheme"),
        (["--storage-path", "s3://"], "--storage-path", "no valid bucket name"),
        (["--storage-path", "s3:///runs"], "--storage-path", "no valid bucket name"),
        (["--storage-path", "s3://Bad_Bucket/x"], "--storage-path", "no valid bucket"),
        (["--storage-path", "s3://ab/x"], "--storage-path", "no valid bucket name"),
        (["--unknown-flag", "1"], "--unknown-flag", "unrecognized arguments"),
    ],
)
def test_bad_flags_exit_2_with_a_message_naming_the_flag(argv, flag, fragment, capsys):
    # the bad value comes last so that it wins over GOOD's defaults
    with pytest.raises(SystemExit) as exc:
        train.parse_args(GOOD + argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("train.py: error:"), message
    assert flag in message, message
    assert fragment in message, message


def test_main_refuses_bad_flags_before_touching_ray_or_storage(capsys, tmp_path):
    storage = tmp_path / "never-created"
    with pytest.raises(SystemExit) as exc:
        train.main(["--epochs", "0", "--storage-path", str(storage)])
    assert exc.value.code == 2
    assert "--epochs" in capsys.readouterr().err
    assert not storage.exists()


def test_a_storage_path_that_is_a_file_fails_with_a_message_naming_it(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc = train.main(["--storage-path", str(blocker / "runs"), "--run-name", "x"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: storage path ")
    assert str(blocker / "runs") in err
    assert "Traceback" not in err


GOOD_SERVE = {"checkpoint": "/tmp/raygpu-ckpt"}


def test_serve_args_defaults_and_a_typical_set_are_accepted():
    args = ServeArgs(**GOOD_SERVE)
    assert args.max_ongoing_requests >= 1 and args.max_queued_requests >= 1
    assert args.request_timeout_s > 0
    s3 = ServeArgs(
        checkpoint="s3://my-bucket/runs/r/checkpoint_epoch0001_attempt01",
        max_ongoing_requests=4,
        max_queued_requests=-1,
        num_replicas=2,
    )
    assert s3.max_queued_requests == -1


@pytest.mark.parametrize(
    "field,value,fragment",
    [
        ("checkpoint", "", "at least 1 character"),
        ("checkpoint", "hdfs://nn/ckpt", "unsupported scheme"),
        ("checkpoint", "s3://", "no valid bucket name"),
        ("checkpoint", "s3://UPPER/ckpt", "no valid bucket name"),
        ("max_instances", 0, "greater than or equal to 1"),
        ("max_body_bytes", 10, "greater than or equal to 1024"),
        ("max_batch_size", 0, "greater than or equal to 1"),
        ("batch_wait_timeout_s", -0.1, "greater than or equal to 0"),
        ("request_timeout_s", 0, "greater than 0"),
        ("num_replicas", 0, "greater than or equal to 1"),
        ("max_ongoing_requests", 0, "greater than or equal to 1"),
        ("max_queued_requests", 0, "-1 (no limit) or a positive"),
        ("max_queued_requests", -5, "greater than or equal to -1"),
        ("num_cpus", -1, "greater than or equal to 0"),
        ("num_gpus", -0.5, "greater than or equal to 0"),
        ("max_ongoing_requests", "many", "valid integer"),
        ("no_such_field", 1, "Extra inputs are not permitted"),
    ],
)
def test_bad_serve_args_name_the_field(field, value, fragment):
    with pytest.raises(ValidationError) as exc:
        ServeArgs(**{**GOOD_SERVE, field: value})
    errors = exc.value.errors()
    assert [e["loc"][0] for e in errors] == [field], errors
    text = str(exc.value)
    assert field in text and fragment in text, text


def test_build_app_validates_a_plain_dict_the_way_serve_run_passes_it():
    with pytest.raises(ValidationError) as exc:
        serve_app.build_app({**GOOD_SERVE, "max_ongoing_requests": -1})
    assert "max_ongoing_requests" in str(exc.value)


@pytest.mark.parametrize(
    "path, root_path, route",
    [
        ("/predict", "", "/predict"),
        ("/digits/predict", "/digits", "/predict"),
        ("/digits/healthz/", "/digits", "/healthz"),
        ("/digits", "/digits", "/"),
        ("/api/v1/digits/predict", "/api/v1/digits", "/predict"),
        ("/other/predict", "/digits", "/other/predict"),  # not below the prefix
        ("/digitsx/predict", "/digits", "/digitsx/predict"),  # nor this one
        ("/predict", "/", "/predict"),
    ],
)
def test_route_of_strips_the_apps_route_prefix(path, root_path, route):
    assert serve_app.route_of(path, root_path) == route


def test_the_controller_poll_interval_is_half_a_second_only_around_fit(monkeypatch):
    from ray.train.v2._internal.constants import get_env_vars_to_propagate

    monkeypatch.setenv(train.POLL_INTERVAL_ENV, "")  # unset, restored afterwards
    monkeypatch.delenv(train.POLL_INTERVAL_ENV)
    assert train.controller_poll_interval() == 0.5
    with train.controller_env(0.5):
        # what Ray Train copies from the driver to its controller at fit()
        assert get_env_vars_to_propagate()[train.POLL_INTERVAL_ENV] == "0.5"
    assert train.POLL_INTERVAL_ENV not in os.environ
    monkeypatch.setenv(train.POLL_INTERVAL_ENV, "2")
    assert train.controller_poll_interval() == 2.0
    with train.controller_env(2.0):
        assert get_env_vars_to_propagate()[train.POLL_INTERVAL_ENV] == "2"
    assert os.environ[train.POLL_INTERVAL_ENV] == "2"


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_bad_controller_poll_interval_fails_naming_it(
    value, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv(train.POLL_INTERVAL_ENV, value)
    storage = tmp_path / "runs"
    rc = train.main(["--storage-path", str(storage), "--run-name", "x"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {train.POLL_INTERVAL_ENV}: must be a positive")
    assert repr(value) in err and "Traceback" not in err
    assert not storage.exists()
