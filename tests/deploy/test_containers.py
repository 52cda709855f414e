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


def stages(steps: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str], list[tuple[str, str]]]:
    """(instructions before the first FROM, every FROM's arguments, the final stage's instructions)."""
    starts = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    return steps[:starts[0]], [steps[i][1] for i in starts], steps[starts[-1] + 1:]


@pytest.mark.parametrize("role", ["server", "client"])
def test_dockerfile_essentials(role):
    steps = instructions(REPO / role / "Dockerfile")
    preamble, froms, final = stages(steps)
    # Both stages start from one base, a build argument (python:3.11-slim unless told otherwise;
    # deploy/containers-e2e.sh passes a Debian-bootstrapped one), declared before the first FROM.
    assert [word for word, _ in preamble] == ["ARG"] and preamble[0][1] == "BASE=python:3.11-slim", preamble
    assert froms == ["${BASE} AS build", "${BASE}"]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the container must not run as root"
    assert any(word == "RUN" and "useradd" in args and "--uid 10001" in args for word, args in final)
    copies = [args for word, args in steps if word in ("COPY", "ADD")]
    assert copies and not any(SECRET.search(args) for args in copies), copies
    # Only named packages are copied, never the whole context; the image gets the built wheel only
    # (an optional wheel cache is a build-time mount, never a COPY).
    assert not any(args.split()[0] == "." for args in copies), copies
    assert [args for word, args in final if word in ("COPY", "ADD")] == ["--from=build /wheels /wheels"]
    runs = [args for word, args in final if word == "RUN"]
    assert any(args.startswith("pip install ") and " /wheels/*.whl" in args for args in runs), runs
    # pip is a virtual environment's, first on PATH: Debian's own python3 refuses system installs (PEP 668).
    assert any("python3 -m venv /opt/venv" in args for args in runs), runs
    env = " ".join(args for word, args in final if word == "ENV")
    assert re.search(r"\bPATH=/opt/venv/bin:", env), env
    entry = [args for word, args in steps if word == "ENTRYPOINT"]
    assert entry == [f'["clafed", "{role}"]']


def test_server_and_client_images_share_their_layers_up_to_the_installed_packages():
    """Identical steps up to `pip install`: the large layer (torch and the rest) is built and stored once."""
    server, client = (instructions(REPO / role / "Dockerfile") for role in ("server", "client"))

    def through_install(steps):
        end = next(i for i, (word, args) in enumerate(steps) if word == "RUN" and args.startswith("pip install "))
        return steps[:end + 1]

    assert through_install(server) == through_install(client)


def test_dockerignore_keeps_data_and_credentials_out_of_the_build():
    ignored = set((REPO / ".dockerignore").read_text().split())
    # `**/`: a pattern without it matches only at the context root, not in sites/x/credentials/.
    assert {"**/credentials/", "**/data/", "**/*.key", "**/.venv", "**/site_outputs/", "**/*.pt"} <= ignored


def test_compose_mounts_data_read_only_and_credentials_without_baking():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert services["superlink"]["build"]["dockerfile"] == "server/Dockerfile"
    # The Dockerfiles' base image is a build argument; compose passes one (python:3.11-slim by default).
    assert "python:3.11-slim" in services["superlink"]["build"]["args"]["BASE"]
    assert compose["x-hospital"]["build"]["args"]["BASE"] == services["superlink"]["build"]["args"]["BASE"]
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
