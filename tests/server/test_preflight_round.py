"""The federated preflight before round 1: every site's aggregate figures, a malformed reply
refused, a training site without a class warned about or, when asked, stopping the run."""
from __future__ import annotations

import pytest
import yaml
from flwr.app import Context, Error, Message, RecordDict

from client import client_app
from client.preflight import preflight_keys_problem
from common import messages as msg
from server import run_dir as rd
from server.federation import FederationError, preflight
from server.recorder import RunRecorder
from server.records import SiteInfo
from server.settings import Settings
from tests.sitegen import write_site

FULL = {"pre.train.n": 20, "pre.heldout.n": 10, "pre.train.suppressed": 0, "pre.heldout.suppressed": 0,
        **{f"pre.train.class.{c}": 5 for c in ("reactive", "tuberculous", "lymphoma", "metastatic")},
        **{f"pre.heldout.class.{c}": 0 for c in ("reactive", "tuberculous")},
        "pre.heldout.class.lymphoma": 5, "pre.heldout.class.metastatic": 5,
        "pre.duplicates": 0, "pre.duplicates_cross_cohort": 0, "pre.unreadable": 0}
NO_LYMPHOMA = dict(FULL, **{"pre.train.class.lymphoma": 0, "pre.train.class.reactive": 10})


class PreflightGrid:
    """Node 1 sends full figures, node 2 lacks lymphoma, node 3 lies, node 4 fails."""

    def __init__(self):
        self.sent = []

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for request in messages:
            node = request.metadata.dst_node_id
            self.sent.append((request.metadata.message_type, node))
            if node == 4:
                replies.append(Message(Error(code=0, reason="ImageError at the site"), reply_to=request))
                continue
            figures = {1: FULL, 2: NO_LYMPHOMA, 3: dict(FULL, **{"pre.train.class.reactive": 10 ** 6})}[node]
            replies.append(Message(RecordDict({msg.METRICS: msg.metric_record(figures)}), reply_to=request))
        return replies


SITES = [SiteInfo(n, f"hospital{n}", "train", "c", {}) for n in (1, 2, 3, 4)]


def test_the_coordinator_keeps_checked_figures_and_warns_about_a_missing_class(tmp_path, caplog):
    settings = Settings(profile="tiny", run_dir=str(tmp_path / "run"))
    grid = PreflightGrid()
    with caplog.at_level("WARNING", logger="clafed.server"):
        figures = preflight(grid, settings, SITES, RunRecorder.open(settings))
    assert [kind for kind, _ in grid.sent] == [msg.PREFLIGHT] * 4
    assert set(figures) == {"hospital1", "hospital2"}  # the lie and the failure are left out
    saved = rd.read_json(tmp_path / "run" / rd.PREFLIGHT_FILE)["sites"]
    assert saved["hospital2"]["pre.train.class.lymphoma"] == 0
    assert "hospital2 has no training case of lymphoma" in caplog.text
    assert "preflight of hospital3 refused" in caplog.text and "preflight of hospital4 failed" in caplog.text


def test_a_missing_class_stops_the_run_when_asked(tmp_path):
    settings = Settings(profile="tiny", run_dir=str(tmp_path / "run"), stop_on_missing_class=True)
    with pytest.raises(FederationError, match="hospital2 has no training case of lymphoma"):
        preflight(PreflightGrid(), settings, SITES[:2], RunRecorder.open(settings))


def test_a_site_answers_the_preflight_with_aggregate_figures_only(tmp_path):
    manifest = write_site(tmp_path / "data", {"reactive": 4, "tuberculous": 4, "lymphoma": 4, "metastatic": 4})
    site_yaml = tmp_path / "hospital9.yaml"
    site_yaml.write_text(yaml.safe_dump({"name": "hospital9", "manifest": str(manifest), "min_cohort": 4,
                                         "output_dir": str(tmp_path / "out"), "device": "cpu"}))
    context = Context(run_id=1, node_id=5, node_config={"site-config": str(site_yaml)}, state=RecordDict(),
                      run_config={})
    reply = client_app.preflight(Message(RecordDict(), dst_node_id=5, message_type=msg.PREFLIGHT), context)
    figures = dict(reply.content[msg.METRICS])
    assert set(reply.content.keys()) == {msg.METRICS} and preflight_keys_problem(figures) is None
    assert figures["pre.train.n"] + figures["pre.heldout.n"] == 16 and figures["pre.duplicates"] == 0
    ids = [line.split(",")[0] for line in manifest.read_text().splitlines()[1:]]
    assert not any(case in key for case in ids for key in figures)
    assert (tmp_path / "out" / "preflight.json").is_file()  # the detail, with case ids, stays at the site
