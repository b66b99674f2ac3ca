"""The shared fixtures' own guarantees (tests/conftest.py)."""

import socket
import urllib.request

from tests import conftest


def test_moto_moves_to_another_port_when_its_port_is_taken(monkeypatch):
    """A free port taken by someone else before moto binds it (a real listening
    socket here): moto exits, and the next free port is used."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy])
        real_free_port = conftest.free_port
        monkeypatch.setattr(
            conftest, "free_port", lambda: next(ports, None) or real_free_port()
        )
        with conftest.start_moto() as (proc, url):
            assert not url.endswith(f":{busy}")
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=10) as resp:
                assert resp.status == 200
            assert proc.poll() is None
