"""What the web tests share: `clafed serve`'s app built from command-line arguments, a test client
that speaks to it as a browser on loopback would, and uploads made from files."""
from __future__ import annotations

import argparse
import base64
from pathlib import Path

from fastapi.testclient import TestClient

from common.serve_cli import add_arguments, build_app

BASE = "http://127.0.0.1:8765"


def serve_args(*argv: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def client(*argv: object, base_url: str = BASE) -> TestClient:
    app, _ = build_app(serve_args(*argv))
    return TestClient(app, base_url=base_url)


def upload(path: Path, name: str | None = None) -> dict:
    return {"name": name or Path(path).name, "data": base64.b64encode(Path(path).read_bytes()).decode()}


def upload_bytes(data: bytes, name: str) -> dict:
    return {"name": name, "data": base64.b64encode(data).decode()}
