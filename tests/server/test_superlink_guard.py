"""The SuperLink's Control API guard: who may start runs and register nodes (HTTP level)."""
from __future__ import annotations

import asyncio

import pytest

from server import superlink_guard as guard


@pytest.mark.parametrize("path, local, peer, refused", [
    # The Control API: only on the control address, whoever the peer claims to be.
    ("/v1/control/start-run", "127.0.0.1", "127.0.0.1", False),
    ("/v1/control/register-node", "::1", "::1", False),
    ("/v1/control/start-run", "127.0.0.2", "127.0.0.1", True),
    ("/v1/control/register-node", "192.0.2.10", "198.51.100.7", True),
    ("/v1/control/list-runs", "::ffff:192.0.2.10", "::ffff:198.51.100.7", True),
    ("/v1/control/start-run", None, None, True),
    # The Runtime API: processes of this machine only.
    ("/v1/runtime/pull-messages", "192.0.2.10", "192.0.2.10", False),
    ("/v1/runtime/pull-messages", "192.0.2.10", "127.0.0.1", False),
    ("/v1/runtime/pull-messages", "192.0.2.10", "198.51.100.7", True),
    # The Fleet API and health stay open (node authentication is Flower's).
    ("/v1/fleet/pull-messages", "192.0.2.10", "198.51.100.7", False),
    ("/health", "192.0.2.10", "198.51.100.7", False),
])
def test_refusal_by_path_and_address(path, local, peer, refused):
    assert (guard.refusal(path, local, peer, guard.DEFAULT_CONTROL_HOSTS) is not None) == refused


def run_request(path: str, server: tuple[str, int], client: tuple[str, int]) -> tuple[list[dict], list[str]]:
    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "server": server, "client": client}
    asyncio.run(guard.ControlAccessGuard(app)(scope, None, send))
    return sent, reached


def test_the_middleware_answers_403_without_reaching_flower():
    sent, reached = run_request("/v1/control/start-run", ("192.0.2.10", 8000), ("198.51.100.7", 5555))
    assert reached == [] and sent[0]["status"] == 403
    assert b"control address" in sent[1]["body"]
    sent, reached = run_request("/v1/control/start-run", ("127.0.0.1", 8000), ("127.0.0.1", 5555))
    assert reached == ["/v1/control/start-run"] and sent == []


def test_install_puts_the_guard_first_in_flowers_stack(monkeypatch):
    import flwr.superlink.main as superlink_main

    monkeypatch.setattr(superlink_main, "_get_middleware", superlink_main._get_middleware)
    flower_own = superlink_main._get_middleware()
    guard.install(["127.0.0.1"])
    stack = superlink_main._get_middleware()
    assert stack[0].cls is guard.ControlAccessGuard and stack[0].kwargs == {"control_hosts": ("127.0.0.1",)}
    assert [m.cls for m in stack[1:]] == [m.cls for m in flower_own]


def test_install_fails_closed_when_flower_has_no_hook(monkeypatch):
    import flwr.superlink.main as superlink_main

    monkeypatch.delattr(superlink_main, "_get_middleware")
    with pytest.raises(SystemExit, match="cannot be guarded"):
        guard.install(["127.0.0.1"])
