"""Teardown order and bounded waits, with Kubernetes and Pulumi behind the seam.

The cluster is a small in-memory stand-in for the Kubernetes API (objects that take
some polls to go, like objects held by finalizers; its "load balancer controller"
deletes the real load balancer on the loopback AWS API when its Service goes).
AWS itself is moto_server: the waits for load balancers and the final scan for
leftovers are the real code against a real API.
"""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest

from raygpu import cli
from raygpu.errors import CommandError
from raygpu.orphans import OrphanScanner
from raygpu.stack import REPO_ROOT, Kubectl
from raygpu.teardown import (
    KubectlKubernetes,
    KubeObject,
    Limits,
    PulumiCli,
    Teardown,
)
from tests.raygpu.conftest import REGION

LIMITS = Limits(ray_objects_s=120, exposure_s=300, aws_s=200, interval_s=5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Cluster:
    """Kubernetes objects; a deleted one goes after `linger` more list calls
    (None: never, like a finalizer nobody removes), then runs its `on_gone`."""

    def __init__(self, events: list[tuple[str, str]]) -> None:
        self.events = events
        self.objects: dict[tuple[str, str, str], KubeObject] = {}
        self.linger: dict[tuple[str, str, str], int | None] = {}
        self.on_gone: dict[tuple[str, str, str], Callable[[], None]] = {}
        self.deleting: dict[tuple[str, str, str], int | None] = {}

    def add(self, obj: KubeObject, linger: int | None = 1, on_gone=None) -> None:
        key = (obj.kind, obj.namespace, obj.name)
        self.objects[key] = obj
        self.linger[key] = linger
        if on_gone:
            self.on_gone[key] = on_gone

    def list(self, kind: str) -> list[KubeObject]:
        for key in list(self.deleting):
            if key[0] != kind or self.deleting[key] is None:
                continue
            self.deleting[key] -= 1
            if self.deleting[key] <= 0:
                obj = self.objects.pop(key)
                del self.deleting[key]
                if key in self.on_gone:
                    self.on_gone[key]()
                self.events.append(("gone", str(obj)))
        return [o for k, o in self.objects.items() if k[0] == kind]

    def delete(self, obj: KubeObject) -> None:
        key = (obj.kind, obj.namespace, obj.name)
        assert key in self.objects, key
        self.events.append(("delete", str(obj)))
        self.deleting.setdefault(key, self.linger[key])


class RecordingPulumi:
    def __init__(self, events, code: int = 0, action=None) -> None:
        self.events = events
        self.code = code
        self.action = action

    def destroy(self, stack: str) -> int:
        self.events.append(("pulumi destroy", stack))
        if self.action:
            self.action()
        return self.code


def controller_load_balancer(session, vpc, subnets, cluster: str) -> Callable:
    """An internal ALB with a listener and target group, as the AWS Load Balancer
    Controller makes them for a Service; returns what deletes them."""
    elbv2 = session.client("elbv2")
    suffix = uuid.uuid4().hex[:8]
    tags = [{"Key": "elbv2.k8s.aws/cluster", "Value": cluster}]
    lb = elbv2.create_load_balancer(
        Name=f"k8s-web-{suffix}", Subnets=subnets, Scheme="internal", Tags=tags
    )["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elbv2.create_target_group(
        Name=f"k8s-web-{suffix}", Protocol="HTTP", Port=80, VpcId=vpc, Tags=tags
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )

    def delete() -> None:
        elbv2.delete_load_balancer(LoadBalancerArn=lb)
        elbv2.delete_target_group(TargetGroupArn=tg)

    return delete


def make_teardown(session, cluster_name, kube, pulumi, clock, stack=None, lines=None):
    stack = stack or f"t{uuid.uuid4().hex[:6]}"
    scanner = OrphanScanner(
        session,
        stack,
        cluster_name=cluster_name,
        clock=clock,
        wait_timeout_s=60,
        interval_s=5,
        log=lambda line: None,
    )
    log = lines.append if lines is not None else (lambda line: None)
    return Teardown(stack, kube, pulumi, scanner, clock=clock, limits=LIMITS, log=log)


def ray_cluster_objects(cluster: Cluster) -> None:
    cluster.add(KubeObject("rayservices.ray.io", "ray", "serve"), linger=2)
    cluster.add(KubeObject("rayjobs.ray.io", "ray", "train-1"), linger=1)
    cluster.add(KubeObject("rayclusters.ray.io", "ray", "raygpu-dev"), linger=3)
    cluster.add(KubeObject("services", "ray", "raygpu-dev-head-svc", "ClusterIP"))
    cluster.add(KubeObject("persistentvolumeclaims", "ray", "logs"), linger=1)


def test_order_ray_objects_then_exposure_then_aws_then_destroy_then_scan(aws):
    session, vpc, subnets = aws
    events: list[tuple[str, str]] = []
    cluster_name = f"raygpu-{uuid.uuid4().hex[:6]}"
    kube = Cluster(events)
    ray_cluster_objects(kube)
    delete_lb = controller_load_balancer(session, vpc, subnets, cluster_name)

    def controller_deletes_lb() -> None:
        events.append(("aws", "load balancer deleted by its controller"))
        delete_lb()

    kube.add(
        KubeObject("services", "web", "public", "LoadBalancer"),
        linger=3,
        on_gone=controller_deletes_lb,
    )
    kube.add(KubeObject("ingresses.networking.k8s.io", "web", "api"), linger=2)
    clock = FakeClock()
    lines: list[str] = []
    state_at_destroy = {}
    teardown = make_teardown(
        session,
        cluster_name,
        kube,
        RecordingPulumi(
            events,
            action=lambda: state_at_destroy.update(
                lbs=teardown.scanner.load_balancers_left(),
                objects=sorted(str(o) for o in kube.objects.values()),
            ),
        ),
        clock,
        lines=lines,
    )

    assert teardown.run() == 0, lines

    deletes = [name for what, name in events if what == "delete"]
    assert deletes == [
        "rayservices ray/serve",
        "rayjobs ray/train-1",
        "rayclusters ray/raygpu-dev",
        "services web/public",
        "ingresses web/api",
        "persistentvolumeclaims ray/logs",
    ]

    def at(event):
        return events.index(event)

    # Each Ray kind is gone before the next is deleted.
    assert at(("gone", "rayservices ray/serve")) < at(("delete", "rayjobs ray/train-1"))
    assert at(("gone", "rayjobs ray/train-1")) < at(
        ("delete", "rayclusters ray/raygpu-dev")
    )
    assert at(("gone", "rayclusters ray/raygpu-dev")) < at(
        ("delete", "services web/public")
    )
    # Everything, load balancer included, is gone before pulumi destroy runs.
    destroy = at(("pulumi destroy", teardown.stack))
    assert destroy == len(events) - 1
    assert at(("aws", "load balancer deleted by its controller")) < destroy
    assert state_at_destroy == {
        "lbs": [],
        "objects": ["services ray/raygpu-dev-head-svc"],  # ClusterIP: left alone
    }
    assert lines[-1] == f"nothing of stack {teardown.stack!r} is left"


def test_a_service_that_never_goes_stops_before_destroy_within_the_bound(aws):
    session, _, _ = aws
    events: list[tuple[str, str]] = []
    kube = Cluster(events)
    kube.add(KubeObject("services", "web", "stuck", "LoadBalancer"), linger=None)
    clock = FakeClock()
    pulumi = RecordingPulumi(events)
    teardown = make_teardown(session, "raygpu-x", kube, pulumi, clock)
    with pytest.raises(CommandError) as err:
        teardown.run()
    message = str(err.value)
    assert (
        "timed out after 300s waiting for Kubernetes to delete services web/stuck"
        in (message)
    )
    assert "Nothing was destroyed" in message and "--skip-kubernetes" in message
    assert ("pulumi destroy", teardown.stack) not in events
    assert LIMITS.exposure_s <= clock.now <= LIMITS.exposure_s + LIMITS.interval_s


def test_a_load_balancer_left_in_aws_stops_before_destroy(aws):
    session, vpc, subnets = aws
    cluster_name = f"raygpu-{uuid.uuid4().hex[:6]}"
    events: list[tuple[str, str]] = []
    kube = Cluster(events)
    kube.add(KubeObject("services", "web", "public", "LoadBalancer"), linger=1)
    delete_lb = controller_load_balancer(session, vpc, subnets, cluster_name)
    clock = FakeClock()
    pulumi = RecordingPulumi(events)
    teardown = make_teardown(session, cluster_name, kube, pulumi, clock)
    try:
        with pytest.raises(CommandError) as err:
            teardown.run()
        assert (
            "waiting for AWS to delete load-balancer arn:aws:elasticloadbalancing"
            in (str(err.value))
        )
        assert f"elbv2.k8s.aws/cluster={cluster_name}" in str(err.value)
        assert ("pulumi destroy", teardown.stack) not in events
        assert clock.now <= LIMITS.aws_s + LIMITS.interval_s
    finally:
        delete_lb()


def test_leftovers_after_destroy_fail_the_teardown_and_are_listed(aws):
    session, vpc, _ = aws
    stack = f"t{uuid.uuid4().hex[:6]}"
    ec2 = session.client("ec2")
    events: list[tuple[str, str]] = []
    made = {}

    def destroy_leaves_a_group() -> None:
        made["sg"] = ec2.create_security_group(
            GroupName=f"left-{stack}",
            Description="left",
            VpcId=vpc,
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": [{"Key": "raygpu:stack", "Value": stack}],
                }
            ],
        )["GroupId"]

    lines: list[str] = []
    teardown = make_teardown(
        session,
        f"raygpu-{stack}",
        None,
        RecordingPulumi(events, action=destroy_leaves_a_group),
        FakeClock(),
        stack=stack,
        lines=lines,
    )
    assert teardown.run() == 1
    assert lines[0] == "skipping the in-cluster cleanup (no access to the cluster)"
    assert f"error: 1 resource(s) of stack {stack!r} left:" in lines
    assert f"  security-group {made['sg']} (raygpu:stack={stack})" in lines
    assert lines[-1].startswith(f"remove them with: raygpu orphans --stack {stack}")


def test_failed_destroy_is_non_zero_and_still_scans(aws):
    session, _, _ = aws
    lines: list[str] = []
    events: list[tuple[str, str]] = []
    teardown = make_teardown(
        session,
        "raygpu-y",
        None,
        RecordingPulumi(events, code=255),
        FakeClock(),
        lines=lines,
    )
    assert teardown.run() == 1
    assert "error: pulumi destroy exited with 255" in lines
    assert lines[-1] == f"nothing of stack {teardown.stack!r} is left"


def test_protected_data_bucket_is_kept_unless_asked(aws):
    session, _, _ = aws
    stack = f"t{uuid.uuid4().hex[:6]}"
    s3 = session.client("s3")
    bucket = f"{stack}-data"
    s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    s3.put_bucket_tagging(
        Bucket=bucket,
        Tagging={"TagSet": [{"Key": "raygpu:stack", "Value": stack}]},
    )
    s3.put_object(Bucket=bucket, Key="datasets/x", Body=b"1")
    for delete_data, code in ((False, 0), (True, 0)):
        lines: list[str] = []
        teardown = make_teardown(
            session, None, None, RecordingPulumi([]), FakeClock(), stack, lines
        )
        teardown.scanner.data_bucket = bucket
        assert teardown.run(delete_data_bucket=delete_data) == code, lines
        kept = f"  s3-bucket {bucket} (raygpu:stack={stack})" in lines
        assert kept is (not delete_data)
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


# ------------------------------------------------------------ the real adapters


class Runner:
    """Stands in for subprocess.run: records argv, answers from a table."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        words = " ".join(argv)
        for needle, (code, out, err) in self.answers.items():
            if needle in words:
                return subprocess.CompletedProcess(argv, code, out, err)
        raise AssertionError(f"unexpected command {argv}")


def test_kubectl_adapter_lists_all_namespaces_and_deletes_without_waiting(tmp_path):
    services = {
        "items": [
            {
                "metadata": {"name": "head", "namespace": "ray"},
                "spec": {"type": "ClusterIP"},
            },
            {
                "metadata": {"name": "pub", "namespace": "web"},
                "spec": {"type": "LoadBalancer"},
            },
        ]
    }
    runner = Runner(
        {
            "get services": (0, json.dumps(services), ""),
            "get rayjobs.ray.io": (
                1,
                "",
                'error: the server doesn\'t have a resource type "rayjobs"',
            ),
            "get ingresses": (1, "", "Unable to connect to the server: timeout"),
            "delete": (0, "", ""),
        }
    )
    kube = KubectlKubernetes(
        Kubectl(tmp_path / "kc", executable="kubectl", runner=runner)
    )
    assert kube.list("services") == [
        KubeObject("services", "ray", "head", "ClusterIP"),
        KubeObject("services", "web", "pub", "LoadBalancer"),
    ]
    assert runner.calls[-1] == [
        "kubectl",
        "--kubeconfig",
        str(tmp_path / "kc"),
        "get",
        "services",
        "--all-namespaces",
        "-o",
        "json",
    ]
    assert kube.list("rayjobs.ray.io") == []  # CRDs gone: nothing to delete
    with pytest.raises(CommandError, match="Unable to connect to the server"):
        kube.list("ingresses.networking.k8s.io")
    kube.delete(KubeObject("services", "web", "pub", "LoadBalancer"))
    assert runner.calls[-1][3:] == [
        "delete",
        "services",
        "pub",
        "-n",
        "web",
        "--wait=false",
        "--ignore-not-found",
    ]


def test_pulumi_adapter_runs_destroy_from_the_repo_root(tmp_path, monkeypatch):
    fake = tmp_path / "pulumi"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    calls = []
    cli = PulumiCli(runner=lambda argv, **kw: calls.append((argv, kw)) or 7)
    assert cli.destroy("dev") == 7
    ((argv, kwargs),) = calls
    assert argv == [str(fake), "destroy", "--yes", "--stack", "dev"]
    assert (kwargs["cwd"] / "Pulumi.yaml").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CommandError, match="the Pulumi CLI was not found"):
        cli.destroy("dev")


def test_make_destroy_entry_point(aws, fake_kubectl, tmp_path, monkeypatch, capsys):
    """teardown.main wires kubectl (private kubeconfig), the AWS scan and pulumi."""
    session, _, _ = aws
    stack = f"t{uuid.uuid4().hex[:6]}"
    record = tmp_path / "pulumi.args"
    pulumi = fake_kubectl.bin_dir / "pulumi"
    pulumi.write_text(
        f'#!/bin/sh\necho "$@" > "{record}"\necho "pwd=$PWD" >> "{record}"\n'
    )
    pulumi.chmod(pulumi.stat().st_mode | stat.S_IXUSR)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                "region": REGION,
                "cluster_name": f"raygpu-{stack}",
                "kubeconfig": "apiVersion: v1\n",
                "data_bucket": f"{stack}-data",
            }
        )
    )

    argv = ["destroy", "--stack", stack, "--outputs", str(outputs), "--yes"]
    assert cli.main(argv) == 0
    kinds = [c["args"][1] for c in fake_kubectl.calls()]
    assert kinds == [
        "rayservices.ray.io",
        "rayjobs.ray.io",
        "rayclusters.ray.io",
        "services",
        "ingresses.networking.k8s.io",
        "persistentvolumeclaims",
    ]
    assert {c["kubeconfig_mode"] for c in fake_kubectl.calls()} == {"0o600"}
    args, cwd = record.read_text().splitlines()
    assert args == f"destroy --yes --stack {stack}"
    assert cwd == f"pwd={REPO_ROOT}"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"nothing of stack {stack!r} is left"
    )


# ------------------------------------------------- asking, --dry-run, --json


def test_the_plan_names_each_step_and_what_it_acts_on_and_changes_nothing(aws):
    session, vpc, subnets = aws
    stack = f"p{uuid.uuid4().hex[:6]}"
    cluster_name = f"raygpu-{stack}"
    events: list[tuple[str, str]] = []
    kube = Cluster(events)
    ray_cluster_objects(kube)
    kube.add(KubeObject("services", "web", "public", "LoadBalancer"))
    delete_lb = controller_load_balancer(session, vpc, subnets, cluster_name)
    pulumi = RecordingPulumi(events)
    teardown = make_teardown(
        session, cluster_name, kube, pulumi, FakeClock(), stack=stack
    )
    try:
        plan = teardown.plan()
        assert [step.items for step in plan.steps[:2]] == [
            [
                "rayservices ray/serve",
                "rayjobs ray/train-1",
                "rayclusters ray/raygpu-dev",
            ],
            ["services web/public", "persistentvolumeclaims ray/logs"],
        ]
        lbs = plan.steps[2].items
        assert [item.split()[0] for item in lbs] == ["load-balancer", "target-group"]
        assert plan.steps[3].what == f"run `pulumi destroy --yes --stack {stack}`"
        assert len(plan.steps) == 4
        text = "\n".join(plan.lines())
        assert "  5. scan for leftovers" in text
        for item in lbs:
            assert item in text
        # Nothing asked of Kubernetes but lists, nothing of Pulumi, AWS as it was.
        assert events == []
        assert len(teardown.scanner.load_balancers_left()) == 2
    finally:
        delete_lb()


class Unreachable:
    def list(self, kind: str) -> list[KubeObject]:
        raise CommandError(f"`kubectl get {kind}` failed: Unable to connect")

    def delete(self, obj: KubeObject) -> None:
        raise AssertionError("a plan deletes nothing")


def test_the_plan_says_what_it_cannot_list(aws):
    session, _, _ = aws
    teardown = make_teardown(
        session, "raygpu-u", Unreachable(), RecordingPulumi([]), FakeClock()
    )
    plan = teardown.plan()
    assert plan.steps[0].error == (
        "`kubectl get rayservices.ray.io` failed: Unable to connect"
    )
    assert plan.steps[2].items == []  # no load balancer of the cluster now
    text = plan.lines()
    assert (
        "       (cannot list them: `kubectl get rayservices.ray.io` failed: "
        "Unable to connect)" in text
    )
    assert text.count("       (none now)") == 1


def destroy_setup(session, fake_kubectl, tmp_path, kubeconfig: bool = True):
    """A stack with a data bucket holding an object, its outputs file, and a
    `pulumi` on PATH that records its arguments and prints a line."""
    stack = f"d{uuid.uuid4().hex[:6]}"
    bucket = f"{stack}-data"
    s3 = session.client("s3")
    s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    s3.put_bucket_tagging(
        Bucket=bucket, Tagging={"TagSet": [{"Key": "raygpu:stack", "Value": stack}]}
    )
    s3.put_object(Bucket=bucket, Key="datasets/x", Body=b"1")
    record = tmp_path / "pulumi.args"
    pulumi = fake_kubectl.bin_dir / "pulumi"
    pulumi.write_text(f'#!/bin/sh\necho "$@" > "{record}"\necho "pulumi: done"\n')
    pulumi.chmod(pulumi.stat().st_mode | stat.S_IXUSR)
    values = {
        "region": REGION,
        "cluster_name": f"raygpu-{stack}",
        "data_bucket": bucket,
    }
    if kubeconfig:
        values["kubeconfig"] = "apiVersion: v1\n"
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(values))
    return stack, bucket, outputs, record


def bucket_objects(session, bucket: str) -> list[str] | None:
    """The bucket's keys, or None when it is gone."""
    s3 = session.client("s3")
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        return None
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_dry_run_prints_the_steps_and_leftovers_and_changes_nothing(
    aws, fake_kubectl, tmp_path, capsys
):
    session, vpc, subnets = aws
    stack, bucket, outputs, record = destroy_setup(session, fake_kubectl, tmp_path)
    delete_lb = controller_load_balancer(session, vpc, subnets, f"raygpu-{stack}")
    ec2 = session.client("ec2")
    group = ec2.create_security_group(
        GroupName=f"sg-{stack}",
        Description="stack's",
        VpcId=vpc,
        TagSpecifications=[
            {
                "ResourceType": "security-group",
                "Tags": [{"Key": "raygpu:stack", "Value": stack}],
            }
        ],
    )["GroupId"]
    base = ["destroy", "--stack", stack, "--outputs", str(outputs)]
    try:
        assert cli.main([*base, "--dry-run", "--delete-data-bucket"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"raygpu destroy, for stack {stack!r} in {REGION}")
        assert f"  4. run `pulumi destroy --yes --stack {stack}`" in out
        assert "  5. delete the protected data bucket and its KMS key" in out
        assert f"delete           s3-bucket {bucket} (raygpu:stack={stack})" in out
        assert f"delete           security-group {group}" in out
        assert "       load-balancer arn:aws:elasticloadbalancing" in out
        assert out.rstrip().endswith("dry run: nothing was changed")

        assert cli.main([*base, "--dry-run", "--json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert plan["dry_run"] is True and plan["stack"] == stack
        actions = {(r["kind"], r["id"]): r["action"] for r in plan["resources"]}
        assert actions[("s3-bucket", bucket)] == "keep"  # protected
        assert actions[("security-group", group)] == "delete"
        assert len(plan["steps"]) == 4

        # Nothing was deleted: no pulumi, only `kubectl get`, AWS as it was.
        assert not record.exists()
        calls = fake_kubectl.calls()
        assert calls and {c["args"][0] for c in calls} == {"get"}
        assert bucket_objects(session, bucket) == ["datasets/x"]
        assert ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
        scanner = OrphanScanner(session, stack, cluster_name=f"raygpu-{stack}")
        assert len(scanner.load_balancers_left()) == 2
    finally:
        delete_lb()


def run_on_terminal(argv: list[str], answer: str) -> subprocess.CompletedProcess:
    """Run `argv` with a pseudo-terminal as stdin, typing `answer` into it."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(terminal)
        os.write(controller, answer.encode())
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(controller)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_destroy_asks_for_the_stack_name_and_aborts_on_anything_else(
    aws, fake_kubectl, tmp_path
):
    session, _, _ = aws
    stack, bucket, outputs, record = destroy_setup(session, fake_kubectl, tmp_path)
    argv = [sys.executable, "-m", "raygpu", "destroy", "--stack", stack]
    argv += ["--outputs", str(outputs), "--delete-data-bucket"]

    wrong = run_on_terminal(argv, f"{stack}x\n")
    assert wrong.returncode == 1, wrong.stderr
    assert wrong.stderr == (
        f"raygpu destroy: error: aborted (got '{stack}x', not '{stack}'); "
        "nothing was destroyed\n"
    )
    assert f"s3-bucket {bucket}" in wrong.stdout  # what it would destroy, first
    assert wrong.stdout.endswith(f"Type the stack name ({stack}) to destroy it: ")
    assert not record.exists()
    assert {c["args"][0] for c in fake_kubectl.calls()} == {"get"}
    assert bucket_objects(session, bucket) == ["datasets/x"]

    right = run_on_terminal(argv, f"{stack}\n")
    assert right.returncode == 0, right.stdout + right.stderr
    assert record.read_text().split() == ["destroy", "--yes", "--stack", stack]
    assert bucket_objects(session, bucket) is None  # --delete-data-bucket
    assert right.stdout.splitlines()[-1] == f"nothing of stack {stack!r} is left"


def test_destroy_without_a_terminal_needs_yes(aws, fake_kubectl, tmp_path):
    session, _, _ = aws
    stack, bucket, outputs, record = destroy_setup(session, fake_kubectl, tmp_path)
    argv = [sys.executable, "-m", "raygpu", "destroy", "--stack", stack]
    argv += ["--outputs", str(outputs), "--delete-data-bucket"]
    # The name on a pipe is no answer: a script must say --yes.
    proc = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        input=f"{stack}\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("raygpu destroy: error: destroy asks before it deletes")
    assert f"pass --yes to destroy stack {stack!r} without asking" in line
    assert proc.stdout == ""
    assert not record.exists()
    assert fake_kubectl.calls() == []
    assert bucket_objects(session, bucket) == ["datasets/x"]


def test_destroy_json_keeps_stdout_for_the_one_document(
    aws, fake_kubectl, tmp_path, capfd
):
    session, _, _ = aws
    stack, bucket, outputs, record = destroy_setup(
        session, fake_kubectl, tmp_path, kubeconfig=False
    )
    argv = ["destroy", "--stack", stack, "--outputs", str(outputs), "--yes", "--json"]
    assert cli.main(argv) == 0
    out, err = capfd.readouterr()
    result = json.loads(out)  # pulumi's own output went to stderr
    assert "pulumi: done" in err
    assert f"nothing of stack {stack!r} is left" in err
    assert result["exit_code"] == 0 and result["left"] == []
    assert [(o["kind"], o["id"]) for o in result["kept"]] == [("s3-bucket", bucket)]
    assert record.read_text().split() == ["destroy", "--yes", "--stack", stack]
