"""Who may use `clafed serve` and what a request may carry (common/web/access.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from fastapi.testclient import TestClient

from common.cli import main
from common.web.access import COOKIE, TOKEN_ENV, Access, AccessError, is_loopback
from common.web.app import create_app
from server.certs import generate_credentials
from tests.web.browser import free_port
from tests.web.harness import client

TOKEN = "t" * 20


def app_for(host: str, token: str | None = None, limit: int = 1000) -> TestClient:
    access = Access.for_host(host, limit, token=token)
    return TestClient(create_app(access, []), base_url="http://127.0.0.1:8765", follow_redirects=False)


def test_loopback_needs_no_token_and_every_answer_carries_the_security_headers(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    answer = app_for("127.0.0.1").get("/")
    assert answer.status_code == 200
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_any_other_address_gets_a_random_token_and_refuses_requests_without_it(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    first, second = Access.for_host("0.0.0.0", 10), Access.for_host("10.1.2.3", 10)
    assert first.token and second.token and first.token != second.token and len(first.token) >= 16
    access = Access.for_host("0.0.0.0", 10, token=TOKEN)
    web = TestClient(create_app(access, []), base_url="http://127.0.0.1:8765", follow_redirects=False)
    assert web.get("/").status_code == 401
    assert web.get("/static/common.js").status_code == 401  # nothing is served without it
    assert web.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert web.get("/", headers={"Authorization": "Bearer " + "x" * 20}).status_code == 401
    web.cookies.set(COOKIE, "y" * 20)
    assert web.get("/").status_code == 401


def test_the_link_with_the_token_sets_a_strict_cookie_and_drops_the_token_from_the_address(monkeypatch):
    web = app_for("0.0.0.0", token=TOKEN)
    assert Access.for_host("0.0.0.0", 10, token=TOKEN).link("http://h:1") == f"http://h:1/?token={TOKEN}"
    answer = web.get("/run", params={"token": TOKEN, "mode": "pooled"})
    assert answer.status_code == 303 and answer.headers["location"] == "/run?mode=pooled"
    cookie = answer.headers["set-cookie"]
    assert f"{COOKIE}={TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    web.cookies.set(COOKIE, TOKEN)
    assert web.get("/").status_code == 200
    assert web.get("/", params={"token": "z" * 20}).status_code == 401


def test_the_token_comes_from_the_environment_and_must_be_long(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert Access.for_host("127.0.0.1", 10).token == TOKEN  # set: required on loopback too
    with pytest.raises(AccessError, match="at least 16"):
        Access.for_host("0.0.0.0", 10, token="short")


def test_a_foreign_host_header_is_refused_even_with_the_token(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    web = app_for("127.0.0.1")
    assert web.get("/", headers={"Host": "attacker.example"}).status_code == 400  # DNS rebinding
    assert web.get("/", headers={"Host": "localhost:8765"}).status_code == 200
    assert web.get("/", headers={"Host": "[::1]:8765"}).status_code == 200
    named = Access.for_host("0.0.0.0", 10, ("ultrasound.hospital.example",), token=TOKEN)
    assert named.host_allowed("ultrasound.hospital.example:8765") and not named.host_allowed("0.0.0.0:8765")
    assert is_loopback("::1") and is_loopback("127.0.0.2") and not is_loopback("10.0.0.1")


def test_posts_must_be_json_of_a_declared_bounded_size(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    web = app_for("127.0.0.1", limit=100)
    too_big = web.post("/api/diagnose/run", content=b"{" + b" " * 200 + b"}", headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413 and "limit of 100" in too_big.json()["error"]
    form = web.post("/api/diagnose/run", content=b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415  # a cross-site form cannot send JSON without a preflight


def test_serve_refuses_to_start_with_nothing_to_serve_or_a_key_without_a_model(tmp_path, capsys):
    assert main(["serve"]) == 2 and "nothing to serve" in capsys.readouterr().err
    assert main(["serve", "--run", str(tmp_path), "--public-key", str(tmp_path / "k.pub")]) == 2
    assert "--public-key checks the model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max-upload-mb"):
        client("--run", tmp_path, "--max-upload-mb", "0")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        client("--run", tmp_path / "file.txt")


def start_serve(*argv: str, scheme: str = "http", context=None):
    """`clafed serve ARGV` in a subprocess with the test token; (process, port, the line it printed)."""
    port = free_port()
    env = dict(os.environ, **{TOKEN_ENV: TOKEN})
    server = subprocess.Popen([sys.executable, "-m", "common.cli", "serve", *argv, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = server.stdout.readline()
    for _ in range(150):  # until uvicorn listens: the first answer is 401 (no token)
        try:
            urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/run", timeout=2, context=context)
        except urllib.error.HTTPError as err:
            assert err.code == 401
            return server, port, line
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise AssertionError(f"clafed serve did not answer: {line}")


def test_clafed_serve_prints_the_link_with_its_token_and_serves_behind_it(tmp_path):
    server, port, line = start_serve("--run", str(tmp_path))
    try:
        assert f"open http://127.0.0.1:{port}/?token={TOKEN}" in line
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/run", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.loads(answer.read())["status"] == "waiting for round 1"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_clafed_serve_over_tls_marks_the_cookie_secure(tmp_path):
    import http.client
    import ssl

    creds = generate_credentials(tmp_path / "certs", ["127.0.0.1"], ["hospital1"])
    context = ssl.create_default_context(cafile=str(creds.ca_cert))
    server, port, line = start_serve("--run", str(tmp_path), "--tls-cert", str(creds.server_cert),
                                     "--tls-key", str(creds.server_key), scheme="https", context=context)
    try:
        assert f"open https://127.0.0.1:{port}/?token=" in line
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        connection.request("GET", f"/?token={TOKEN}")
        answer = connection.getresponse()
        assert answer.status == 303 and "Secure" in answer.getheader("set-cookie")
        connection.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
