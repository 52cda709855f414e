"""Typed configuration: profiles, strict YAML, site files."""
from __future__ import annotations

import pytest

from common.config import PROFILES, get_profile, load_site_config
from common.typed_config import ConfigError


def test_profiles_have_the_documented_sizes():
    assert (PROFILES["tiny"].data.input_size, PROFILES["cpu"].model.backbone) == (64, "resnet18")
    assert (PROFILES["paper"].model.backbone, PROFILES["paper"].data.input_size) == ("resnet50", 224)


def test_profile_overrides_are_checked():
    assert get_profile("cpu", {"train": {"lr": 0.01}}).train.lr == 0.01
    with pytest.raises(ConfigError, match="train.lr: expected a number"):
        get_profile("cpu", {"train": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="unknown key"):
        get_profile("cpu", {"train": {"learning_rate": 0.1}})
    with pytest.raises(ConfigError, match="unknown profile"):
        get_profile("huge")


def test_site_yaml_resolves_paths_relative_to_itself(tmp_path):
    path = tmp_path / "sites" / "h1.yaml"
    path.parent.mkdir()
    path.write_text("name: hospital1\nmanifest: ../data/manifest.csv\nrole: evaluate\n"
                    "holdout: {kind: fraction, fraction: 0.25}\n")
    site = load_site_config(path)
    assert site.manifest == (tmp_path / "data" / "manifest.csv")
    assert site.role == "evaluate" and site.holdout.fraction == 0.25


@pytest.mark.parametrize("text, message", [
    ("name: h\nmanifest: m.csv\nrole: trainer\n", "role: expected one of 'train', 'evaluate'"),
    ("name: h\nmanifest: m.csv\nbatch_size: 8.5\n", "batch_size: expected an integer"),
    ("name: h\nmanifest: m.csv\ncolour: red\n", "unknown key(s) colour"),
    ("name: h\n", "missing required key(s) manifest"),
    ("name: h\nmanifest: [unclosed\n", "malformed YAML"),
    ("name: h\nmanifest: m.csv\nholdout: {kind: date, date: 2021-13-01}\n", "holdout.date must be an ISO date"),
])
def test_bad_site_yaml_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_site_config(path)
    assert message in str(err.value) and "bad.yaml" in str(err.value)
