"""The server's round logic against a fake grid: minimum sites, failures named, nothing half-saved."""
from __future__ import annotations

import pytest
from flwr.app import Error, Message

from common import messages as msg
from common.labels import LEVELS
from common.model import CLAHDM
from server import run_dir as rd
from server.federation import FederationError, SiteInfo, train_level
from server.strategy import short_reason
from server.recorder import RunRecorder
from server.settings import Settings
from tests.server.test_strategy import TaskIdentity  # noqa: F401  (sets the task identity)

LEVEL = LEVELS[0]


class FakeGrid:
    """Two sites: node 1 trains (echoes the weights with 10 cases), node 2 fails or stays silent."""

    def __init__(self, second: str) -> None:
        self.second = second

    def get_node_ids(self):
        return [1, 2]

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for request in messages:
            node = request.metadata.dst_node_id
            if node == 1:
                figures = {msg.NUM_EXAMPLES: 10, "loss": 0.5, "accuracy": 0.8, "train_seconds": 1.0}
                replies.append(Message(msg.train_reply(request.content[msg.ARRAYS], figures), reply_to=request))
            elif self.second == "fails":
                replies.append(Message(Error(code=0, reason="Message: case h2-003: image unreadable"), reply_to=request))
        return replies


def sites():
    counts = {f"train.{lv.key}": 10 for lv in LEVELS}
    return [SiteInfo(1, "hospital1", "train", "c", counts), SiteInfo(2, "hospital2", "train", "c", counts)]


@pytest.mark.parametrize("second, named", [("fails", "failed: hospital2"), ("silent", "silent: hospital2")])
def test_a_round_below_the_minimum_stops_the_run_and_saves_nothing(tmp_path, tiny_profile, second, named):
    settings = Settings(profile="tiny", rounds=1, min_train_sites=2, run_dir=str(tmp_path / "run"))
    recorder = RunRecorder.open(settings)
    with pytest.raises(FederationError, match=f"1 site\\(s\\) contributed, 2 required.*{named}.*resume"):
        train_level(FakeGrid(second), settings, tiny_profile, CLAHDM(tiny_profile.model), LEVEL, sites(), recorder)
    assert not (tmp_path / "run" / rd.STATE_FILE).exists() and not (tmp_path / "run" / rd.METRICS_FILE).exists()


def test_a_round_that_meets_the_minimum_is_recorded(tmp_path, tiny_profile):
    settings = Settings(profile="tiny", rounds=1, min_train_sites=1, run_dir=str(tmp_path / "run"))
    recorder = RunRecorder.open(settings)
    train_level(FakeGrid("fails"), settings, tiny_profile, CLAHDM(tiny_profile.model), LEVEL, sites(), recorder)
    [record] = rd.read_jsonl(tmp_path / "run" / rd.METRICS_FILE)
    assert record["failed_sites"] == {"hospital2": "case h2-003: image unreadable"}
    assert set(record["sites"]) == {"hospital1"} and record["num_examples"] == 10
    [entry] = rd.read_jsonl(tmp_path / "run" / rd.LEDGER_FILE)
    assert entry["sites"] == {"hospital1": 10} and len(entry["sha256"]) == 64
    assert rd.read_json(tmp_path / "run" / rd.STATE_FILE)["completed"][LEVEL.key] == 1


def test_site_errors_are_shown_without_the_transport_traceback():
    wrapped = "<class 'RayTaskError'>:<'Traceback ...\n  File x\nException ... Message: case h1-7: missing file'>"
    assert short_reason(wrapped) == "case h1-7: missing file"
