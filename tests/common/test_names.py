"""Names are never paths: a site's name at the coordinator, a run's name at a site."""
from __future__ import annotations

import pytest
import yaml
from flwr.app import RecordDict

from common import messages as msg
from common.config import ConfigError, load_site_config
from common.errors import ProtocolError
from common.names import checked_name, name_problem
from server import run_dir as rd
from server.federation import site_from_reply
from server.recorder import RunRecorder
from server.settings import Settings


@pytest.mark.parametrize("name", ["hospital1", "H-2", "site_3.v2", "a" * 64])
def test_plain_names_pass(name):
    assert name_problem(name) is None and checked_name(name, "x") == name


@pytest.mark.parametrize("name", ["../../..", "..", "a/b", "/etc", "", ".hidden", "a" * 65, "pat 7", "x..y",
                                  "C:\\x", None, 7])
def test_anything_path_like_is_refused(name):
    assert name_problem(name) is not None
    with pytest.raises(ProtocolError, match="site name"):
        checked_name(name, "site name")


def write_yaml(tmp_path, **values):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"name": "hospital1", "manifest": "m.csv", **values}))
    return path


@pytest.mark.parametrize("values, message", [
    ({"name": "../../evil"}, "name: '../../evil' is not a valid name"),
    ({"device": "quantum"}, "device must be auto, cpu, cuda"),
    ({"batch_size": 0}, "batch_size, min_cohort and min_cell must be >= 1"),
    ({"min_cohort": 0}, "batch_size, min_cohort and min_cell must be >= 1"),
])
def test_the_site_yaml_refuses_bad_names_and_numbers(tmp_path, values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_site_config(write_yaml(tmp_path, **values))


def site_info(name, role="train", counts=None) -> RecordDict:
    return RecordDict({msg.SITE: msg.config_record({"name": name, "role": role, "cohort": "c"}),
                       msg.METRICS: msg.metric_record(counts if counts is not None else {"train.total": 3})})


@pytest.mark.parametrize("content, problem", [
    (site_info("../../.."), "site name refused"),
    (site_info("hospital1", role="admin"), "unknown role"),
    (site_info("hospital1", counts={"train.total": 1.5}), "whole numbers"),
    (site_info("hospital1", counts={"train.total": -1}), "whole numbers"),
    (RecordDict(), "lacks"),
])
def test_the_coordinator_refuses_a_site_that_describes_itself_badly(content, problem):
    site, why = site_from_reply(4, content)
    assert site is None and problem in why


def test_a_good_site_description_is_kept():
    site, why = site_from_reply(4, site_info("hospital1"))
    assert why is None and (site.node_id, site.name, site.counts) == (4, "hospital1", {"train.total": 3})


def test_run_folders_and_evaluation_files_have_plain_names(tmp_path):
    with pytest.raises(ConfigError, match="not a valid name"):
        RunRecorder.open(Settings(profile="tiny", run_dir=str(tmp_path / "my run")))
    with pytest.raises(ProtocolError):
        rd.evaluation_path(tmp_path, "../outside")
