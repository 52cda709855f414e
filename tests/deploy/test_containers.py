"""Dockerfiles and compose.yaml: non-root, no credentials baked in, data mounted read-only."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SECRET = re.compile(r"(credentials|\.key\b|\.pem\b|\.crt\b|supernode|model_signing)", re.I)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


@pytest.mark.parametrize("role", ["server", "client"])
def test_dockerfile_essentials(role):
    steps = instructions(REPO / role / "Dockerfile")
    stages = [args for word, args in steps if word == "FROM"]
    assert stages == ["python:3.11-slim AS build", "python:3.11-slim"]
    final = steps[len(steps) - steps[::-1].index(("FROM", "python:3.11-slim")):]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the container must not run as root"
    copies = [args for word, args in steps if word in ("COPY", "ADD")]
    assert copies and not any(SECRET.search(args) for args in copies), copies
    # Only named packages are copied, never the whole context; the image gets the built wheel only.
    assert not any(args.split()[0] == "." for args in copies), copies
    assert [args for word, args in final if word in ("COPY", "ADD")] == ["--from=build /wheels /wheels"]
    assert any(word == "RUN" and "pip install /wheels/" in args for word, args in final)
    entry = [args for word, args in steps if word == "ENTRYPOINT"]
    assert entry == [f'["clafed", "{role}"]']


def test_dockerignore_keeps_data_and_credentials_out_of_the_build():
    ignored = set((REPO / ".dockerignore").read_text().split())
    # `**/`: a pattern without it matches only at the context root, not in sites/x/credentials/.
    assert {"**/credentials/", "**/data/", "**/*.key", "**/.venv", "**/site_outputs/", "**/*.pt"} <= ignored


def test_compose_mounts_data_read_only_and_credentials_without_baking():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert services["superlink"]["build"]["dockerfile"] == "server/Dockerfile"
    hospitals = [name for name in services if name.startswith("hospital")]
    assert hospitals == ["hospital1", "hospital2", "hospital3"]
    for name in hospitals:
        service = {**compose["x-hospital"], **services[name]}
        assert service["build"]["dockerfile"] == "client/Dockerfile"
        assert service["command"][:2] == ["--site", f"/clafed/sites/{name}.yaml"]
        mounts = {m.split(":")[1]: m.split(":")[2:] for m in service["volumes"]}
        assert mounts[f"/clafed/data/{name}"] == ["ro"]
        for target, options in mounts.items():
            if "credentials" in target or target == "/clafed/sites":
                assert options == ["ro"], target
            # A site sees only its own key, never another hospital's.
            other = [h for h in hospitals if h != name and h in target]
            assert not other, target
    assert all(m.endswith(":ro") for m in services["superlink"]["volumes"] if "credentials" in m)
