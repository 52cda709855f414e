"""One exit-code policy for every command (common/errors.py): 1 problems found, 2 unusable input."""
from __future__ import annotations

import importlib

import pytest

from common import cli
from common.errors import EXIT_BAD_INPUT, EXIT_PROBLEMS, ClafedError
from common.typed_config import ConfigError
from tests.sitegen import write_site

ERRORS = ["common.dataset.CaseError", "common.imaging.ImageError", "common.readers.ReadsError",
          "common.signing.SignatureError", "common.typed_config.ConfigError", "common.manifest.ManifestError",
          "common.errors.ProtocolError", "client.app_guard.AppRefused", "client.disclosure.SiteFailure",
          "server.federation.FederationError", "simulation.split.SplitError"]


@pytest.mark.parametrize("path", ERRORS)
def test_every_error_shares_one_base(path):
    module, name = path.rsplit(".", 1)
    assert issubclass(getattr(importlib.import_module(module), name), ClafedError)


def test_problems_found_exit_1_and_unusable_input_exits_2(tmp_path, capsys):
    manifest = write_site(tmp_path / "site", {"reactive": 1})
    manifest.write_text(manifest.read_text().replace("reactive", "sarcoid"))
    assert cli.main(["validate", str(manifest)]) == EXIT_PROBLEMS
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    assert cli.main(["validate", str(tmp_path / "bad.yaml")]) == EXIT_BAD_INPUT


def test_a_clafed_error_escaping_a_command_is_one_line_and_exit_2(monkeypatch, capsys):
    from simulation import synth_cli

    def broken(args):
        raise ConfigError("sites/h1.yaml: batch_size must be >= 1")

    monkeypatch.setattr(synth_cli, "run", broken)
    assert cli.main(["synth", "--out", "x"]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "clafed synth: sites/h1.yaml: batch_size must be >= 1\n"
