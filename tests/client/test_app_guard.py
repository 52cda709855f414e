"""A site runs only the clafed installed there: any other app sent by the SuperLink is refused."""
from __future__ import annotations

import io
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from client import app_guard

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fab() -> bytes:
    """The app a coordinator submits with `flwr run .` from this checkout."""
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(REPO)


def rebuilt(fab: bytes, **changes: bytes | None) -> bytes:
    """`fab` with members replaced, added (bytes) or removed (None)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(fab)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if name not in changes:
                dst.writestr(name, src.read(name))
        for name, data in changes.items():
            if data is not None:
                dst.writestr(name, data)
    return out.getvalue()


def test_the_installed_clafed_is_approved_and_holds_only_its_packages(fab):
    assert app_guard.app_problems(fab) == []
    tops = {name.split("/")[0] for name in zipfile.ZipFile(io.BytesIO(fab)).namelist()}
    assert tops == {".info", "pyproject.toml", "client", "common", "server", "simulation"}


def test_a_changed_file_is_refused_by_name(fab):
    original = (REPO / "client" / "client_app.py").read_bytes()
    bad = rebuilt(fab, **{"client/client_app.py": original + b"\nimport os; os.system('id')\n"})
    assert app_guard.app_problems(bad) == ["client/client_app.py: differs from the clafed installed here"]
    with pytest.raises(app_guard.AppRefused, match="client/client_app.py"):
        app_guard.check_app(bad)


def test_an_added_module_that_could_shadow_a_library_is_refused(fab):
    bad = rebuilt(fab, **{"torch.py": b"raise SystemExit"})
    assert app_guard.app_problems(bad) == ["torch.py: not part of the clafed installed here"]


def test_another_clientapp_or_a_missing_config_is_refused(fab):
    config = zipfile.ZipFile(io.BytesIO(fab)).read("pyproject.toml").decode()
    other = config.replace('clientapp = "client.client_app:app"', 'clientapp = "simulation.runner:app"')
    problems = app_guard.app_problems(rebuilt(fab, **{"pyproject.toml": other.encode()}))
    assert "ClientApp is 'simulation.runner:app'" in problems[0]
    assert app_guard.app_problems(rebuilt(fab, **{"pyproject.toml": None})) == ["no pyproject.toml"]
    assert app_guard.app_problems(b"not a zip") == ["not a FAB (zip) archive"]


def test_paths_outside_the_app_are_refused(fab):
    problems = app_guard.app_problems(rebuilt(fab, **{"../evil.py": b"x"}))
    assert problems == ["../evil.py: a path outside the app"]


def test_the_guard_checks_before_flower_unpacks(fab, monkeypatch):
    import flwr.supernode.runtime.run_clientapp as runner

    unpacked = []
    monkeypatch.setattr(runner, "install_from_fab", lambda content, *a, **k: unpacked.append(content))
    app_guard.install_guard()
    with pytest.raises(app_guard.AppRefused):
        runner.install_from_fab(rebuilt(fab, **{"evil.py": b"x"}), skip_prompt=True)
    assert unpacked == []
    runner.install_from_fab(fab, skip_prompt=True)
    assert unpacked == [fab]


def test_the_launcher_runs_flowers_clientapp_entry_point(tmp_path):
    script = app_guard.write_launcher(tmp_path / "bin")
    assert os.access(script, os.X_OK) and script.name == "flwr-clientapp"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and "--runtime-api-address" in result.stdout, result.stdout + result.stderr
