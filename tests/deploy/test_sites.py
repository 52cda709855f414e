"""The example site YAMLs of the paper's three hospitals load and say what each site does."""
from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_site_config

SITES = Path(__file__).resolve().parents[2] / "sites"


@pytest.mark.parametrize("name", ["hospital1", "hospital2", "hospital3"])
def test_example_site_yaml_loads_with_deployment_fields(name):
    site = load_site_config(SITES / f"{name}.yaml")
    assert site.name == name
    assert site.manifest == (SITES.parent / "data" / name / "manifest.csv").resolve()
    assert site.root_certificates.name == "ca.crt"
    assert site.auth_private_key == (SITES.parent / "credentials" / name / "supernode.key").resolve()
    assert site.coordinator_public_key.name == "model_signing.pub"
    assert site.server_address.endswith(":8000")  # flwr 1.41's single HTTPS port
    assert site.output_dir == (SITES.parent / "site_outputs" / name).resolve()


def test_roles_follow_the_paper():
    """Hospital 1 trains and holds out its 2021 cases; hospitals 2 and 3 are external test cohorts."""
    h1, h2, h3 = (load_site_config(SITES / f"hospital{i}.yaml") for i in (1, 2, 3))
    assert (h1.role, h1.holdout.kind, h1.holdout.date) == ("train", "date", "2021-01-01")
    assert [(s.role, s.holdout.kind) for s in (h2, h3)] == [("evaluate", "all")] * 2
