"""Failures are visible: in the run's records, the report, the summary and the exit code."""
from __future__ import annotations

import pytest

from common.config import ConfigError
from common.model import CLAHDM
from server import run_dir as rd
from server.recorder import RunRecorder
from server.records import RoundReport, SiteInfo
from server.report import build_blocks, render_markdown
from server.settings import Settings, load_settings

SITES = [SiteInfo(1, "hospital1", "train", "c", {"train.submodel1": 10}),
         SiteInfo(2, "hospital2", "train", "c", {"train.submodel1": 10})]


@pytest.fixture
def recorded(tmp_path, tiny_profile):
    """A run where one node never joined, one site failed a round, one stayed silent, one evaluation failed."""
    settings = Settings(profile="tiny", run_dir=str(tmp_path / "run"))
    recorder = RunRecorder.open(settings)
    recorder.started(SITES, tiny_profile, ["node 9: the site's manifest cannot be used (2 problem(s))"])
    model = CLAHDM(tiny_profile.model)
    from common import messages as msg

    arrays = msg.state_to_arrays(model.submodels["submodel1"].state_dict())
    report = RoundReport(1, arrays, None, replies={1: {msg.NUM_EXAMPLES: 10}},
                         failures={2: "reply refused: weights hold NaN"}, silent=["hospital3"])
    recorder.round_completed("submodel1", 1, model, report, {1: "hospital1", 2: "hospital2"})
    recorder.evaluation_failed("hospital2", "no reply within 60 s")
    return recorder


def test_every_kind_of_failure_is_listed(recorded):
    problems = rd.run_problems(recorded.path)
    assert problems == [
        "could not take part: node 9: the site's manifest cannot be used (2 problem(s))",
        "submodel1 round 1: hospital2 failed: reply refused: weights hold NaN",
        "submodel1 round 1: hospital3 sent no reply",
        "evaluation at hospital2 failed: no reply within 60 s",
        "the run did not finish (see its log; resume it with --resume / resume=true)",
    ]
    recorded.finished()
    assert len(rd.run_problems(recorded.path)) == 4


def test_the_report_shows_them(recorded):
    markdown = render_markdown(build_blocks(recorded.path))
    assert "Site failures" in markdown
    assert "hospital3 sent no reply" in markdown and "node 9" in markdown


def test_a_clean_run_has_no_problems(tmp_path, tiny_profile):
    recorder = RunRecorder.open(Settings(profile="tiny", run_dir=str(tmp_path / "run")))
    recorder.started(SITES, tiny_profile)
    recorder.finished()
    assert rd.run_problems(recorder.path) == []


@pytest.mark.parametrize("change, message", [
    ("sites", "it was started with the sites hospital1, hospital2"),
    ("settings", "settings differ from the first attempt \\(proximal_mu, strategy\\)"),
])
def test_resume_refuses_other_sites_or_settings(tmp_path, tiny_profile, change, message):
    first = RunRecorder.open(Settings(profile="tiny", run_dir=str(tmp_path / "run")))
    first.started(SITES, tiny_profile)
    first.state["completed"]["submodel1"] = 1
    rd.write_json(first.path / rd.STATE_FILE, first.state)
    settings = Settings(profile="tiny", run_dir=str(tmp_path / "run"), resume=True, round_timeout=10.0)
    if change == "settings":
        settings = Settings(profile="tiny", run_dir=str(tmp_path / "run"), resume=True, strategy="fedprox",
                            proximal_mu=0.5)
    again = RunRecorder.open(settings)
    sites = SITES[:1] if change == "sites" else SITES
    with pytest.raises(ConfigError, match=message):
        again.started(sites, tiny_profile)


def test_a_resume_may_change_only_timeouts_and_minimums(tmp_path, tiny_profile):
    first = RunRecorder.open(Settings(profile="tiny", run_dir=str(tmp_path / "run")))
    first.started(SITES, tiny_profile)
    rd.write_json(first.path / rd.STATE_FILE, first.state)
    again = RunRecorder.open(Settings(profile="tiny", run_dir=str(tmp_path / "run"), resume=True,
                                      round_timeout=10.0, min_sites=2))
    again.started(SITES, tiny_profile)


@pytest.mark.parametrize("key, value", [("bootstrap", 0), ("lr", -1.0), ("round-timeout", 0.0),
                                        ("trim-beta", 0.5), ("clip-factor", -1.0), ("strategy", "fedsgd")])
def test_run_config_values_are_range_checked_before_any_training(key, value):
    with pytest.raises(ConfigError):
        load_settings({key: value}, environ={})
