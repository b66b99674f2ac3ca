"""A stand-in for the kubectl binary, for tests of the scripts' Kubernetes seam.

Installed on PATH as `kubectl` by tests. It answers what the operator
scripts ask of kubectl: `get raycluster` (token auth on; suspended when
$FAKE_SUSPENDED is set), `get secret` (the token from $FAKE_TOKEN), `get nodes`
(the document in $FAKE_NODES, else none) and `port-forward`, which it really
does: it listens on 127.0.0.1, prints kubectl's "Forwarding from" line and
relays each connection to 127.0.0.1:$FAKE_TARGET_PORT (a local Ray head) until
it is stopped. Every call is appended to $FAKE_KUBECTL_LOG with the kubeconfig
file's mode.
"""

import base64
import json
import os
import socket
import sys
import threading


def relay(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def port_forward() -> None:
    if os.environ.get("FAKE_PF_FAIL"):
        print(os.environ["FAKE_PF_FAIL"], file=sys.stderr, flush=True)
        sys.exit(1)
    target = int(os.environ["FAKE_TARGET_PORT"])
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    with open(os.environ["FAKE_KUBECTL_PID"], "w") as f:
        f.write(str(os.getpid()))
    remote = sys.argv[-1].split(":")[-1]
    print(
        f"Forwarding from 127.0.0.1:{server.getsockname()[1]} -> {remote}", flush=True
    )
    while True:
        client, _ = server.accept()
        print(f"Handling connection for {remote}", flush=True)
        upstream = socket.create_connection(("127.0.0.1", target))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=relay, args=(a, b), daemon=True).start()


def main() -> None:
    args = sys.argv[1:]
    mode = None
    if args[:1] == ["--kubeconfig"]:
        if os.path.exists(args[1]):
            mode = oct(os.stat(args[1]).st_mode & 0o777)
        args = args[2:]
    with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
        log.write(json.dumps({"args": args, "kubeconfig_mode": mode}) + "\n")
    if args[:2] == ["get", "raycluster"]:
        spec = {"authOptions": {"mode": "token"}}
        if os.environ.get("FAKE_SUSPENDED"):
            spec["suspend"] = True  # `raygpu sleep` was here
        print(json.dumps({"spec": spec}))
    elif args[:2] == ["get", "secret"]:
        token = base64.b64encode(os.environ["FAKE_TOKEN"].encode()).decode()
        print(json.dumps({"data": {"auth_token": token}}))
    elif args[:2] == ["get", "nodes"]:
        nodes = os.environ.get("FAKE_NODES")
        print(open(nodes).read() if nodes else json.dumps({"items": []}))
    elif args[:1] == ["get"] and "--all-namespaces" in args:
        print(json.dumps({"items": []}))  # an empty cluster
    elif args[:1] == ["port-forward"]:
        port_forward()
    else:
        print(f"error: unexpected {args}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
