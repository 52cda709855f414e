"""Nothing about a patient leaves a site: failures arrive as a kind and a count, small cohorts as counts."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml
from flwr.app import Context, Message, RecordDict

from client import client_app, disclosure
from common import federated_validation as fv
from common import messages as msg
from common.config import get_profile
from common.model import CLAHDM
from server.strategy import short_reason
from tests.sitegen import write_site


def make_site(tmp_path, name: str = "hospital9", **extra) -> tuple:
    manifest = write_site(tmp_path / name, {"reactive": 3, "tuberculous": 3, "lymphoma": 3, "metastatic": 3})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "manifest": str(manifest), "batch_size": 4, "device": "cpu",
                                    "holdout": {"kind": "fraction", "fraction": 0.34},
                                    "output_dir": str(tmp_path / f"{name}-out"),
                                    "heatmaps": {"mode": "none"}, **extra}))
    context = Context(run_id=1, node_id=5, node_config={"site-config": str(path)}, state=RecordDict(), run_config={})
    return manifest, context


def final_model_message(run: str = "run1") -> Message:
    profile = get_profile("tiny")
    config = msg.config_record({"profile": msg.profile_to_json(profile), "run": run, "bootstrap": 20, "seed": 0})
    content = RecordDict({msg.ARRAYS: msg.state_to_arrays(CLAHDM(profile.model).state_dict()), msg.CONFIG: config})
    return Message(content, dst_node_id=5, message_type=msg.FINAL_EVAL)


def reason_at_server(context: Context, message: Message) -> str:
    """Run the ClientApp on `message` and return the failure as the server's log would show it."""
    with pytest.raises(disclosure.SiteFailure) as caught:
        client_app.app(message, context)
    # Flower's ClientApp runner sends str(type) + ":<'" + str(exception) + "'>" as the error reason.
    return short_reason(f"{type(caught.value)}:<'{caught.value}'>")


def assert_nothing_per_patient(reason: str, manifest) -> None:
    case_ids = pd.read_csv(manifest)["case_id"]
    assert not any(case in reason for case in case_ids), reason
    assert str(manifest.parent) not in reason and "/" not in reason.replace("N/A", ""), reason


@pytest.mark.parametrize("damage, expected", [
    ("missing image", "manifest cannot be used (1 problem(s))"),
    ("corrupt image", "manifest cannot be used (1 problem(s))"),
    ("wrong label", "manifest cannot be used (1 problem(s))"),
    ("two bad dates", "manifest cannot be used (2 problem(s))"),
])
def test_bad_site_data_reaches_the_server_as_a_kind_and_a_count(tmp_path, damage, expected):
    manifest, context = make_site(tmp_path)
    table = pd.read_csv(manifest, dtype=str)
    if damage == "missing image":
        (manifest.parent / table.loc[0, "bus_path"]).unlink()
    elif damage == "corrupt image":
        (manifest.parent / table.loc[0, "cdfi_path"]).write_bytes(b"not a png")
    elif damage == "wrong label":
        table.loc[0, "label"] = "sarcoidosis"
    else:
        table.loc[[0, 1], "exam_date"] = "yesterday"
    table.to_csv(manifest, index=False)
    reason = reason_at_server(context, Message(RecordDict(), dst_node_id=5, message_type=msg.SITE_INFO))
    assert expected in reason and "clafed validate" in reason
    assert_nothing_per_patient(reason, manifest)


def test_an_unexpected_crash_is_named_by_its_type_only(tmp_path, monkeypatch):
    manifest, context = make_site(tmp_path)
    case = pd.read_csv(manifest)["case_id"][0]

    def crash(*args, **kwargs):
        raise RuntimeError(f"case {case}: tensor mismatch in {manifest.parent}/images/{case}_bus.png")

    monkeypatch.setattr(client_app, "evaluate_final_model", crash)
    reason = reason_at_server(context, final_model_message())
    assert reason == "RuntimeError at the site; the details are in the site's log"


def test_a_run_name_that_is_a_path_is_refused_before_anything_is_written(tmp_path):
    manifest, context = make_site(tmp_path)
    reason = reason_at_server(context, final_model_message(run="../../escaped"))
    assert "run name sent by the server" in reason and "not a valid name" in reason
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "hospital9-out").exists()


def test_an_unsigned_model_is_refused_without_details(tmp_path):
    from server.certs import generate_credentials

    creds = generate_credentials(tmp_path / "creds", ["127.0.0.1"], ["hospital9"])
    manifest, context = make_site(tmp_path, coordinator_public_key=str(creds.signing_public_key))
    reason = reason_at_server(context, final_model_message())
    assert reason == "the site refused the model: its signature did not verify against the coordinator's key"


def test_a_cohort_below_the_minimum_returns_counts_only(tmp_path):
    manifest, context = make_site(tmp_path)  # 4 held-out cases, min_cohort 10 by default
    reply = client_app.app(final_model_message(), context)
    figures = dict(reply.content[msg.METRICS])
    assert figures[disclosure.WITHHELD_KEY] == 1 and figures["n_cases"] == 4
    assert all(key.startswith(disclosure.COUNT_PREFIXES) or key == disclosure.WITHHELD_KEY for key in figures)
    # The site keeps every figure in its own folder.
    assert (tmp_path / "hospital9-out" / "run1" / "evaluation" / "metrics.json").is_file()


def test_small_confusion_cells_are_left_out():
    figures = {"n_cases": 40.0, "clahdm.cm.0.0": 30.0, "clahdm.cm.0.1": 2.0, "clahdm.cm.1.1": 0.0,
               "clahdm.cm.1.0": 8.0, "clahdm.auc.macro": 0.9}
    shared = disclosure.shareable_evaluation(figures, min_cohort=10, min_cell=3)
    assert "clahdm.cm.0.1" not in shared and shared[disclosure.SUPPRESSED_KEY] == 1
    assert shared["clahdm.cm.1.1"] == 0 and shared["clahdm.auc.macro"] == 0.9


def test_reliability_bins_of_few_cases_are_blanked_before_they_leave():
    figures = {"n_cases": 40.0, "calib.clahdm.ece": 0.1, "calib.clahdm.bin.9.n": 1.0,
               "calib.clahdm.bin.9.mean": 0.93, "calib.clahdm.bin.9.observed": 1.0,
               "calib.clahdm.bin.5.n": 39.0, "calib.clahdm.bin.5.mean": 0.55, "calib.clahdm.bin.5.observed": 0.5}
    shared = disclosure.shareable_evaluation(figures, min_cohort=10, min_cell=3)
    assert shared["calib.clahdm.bin.9.n"] == 0 and math.isnan(shared["calib.clahdm.bin.9.mean"])
    assert math.isnan(shared["calib.clahdm.bin.9.observed"]) and shared["calib.clahdm.bin.5.mean"] == 0.55


def test_a_validation_cohort_below_the_minimum_sends_an_empty_pool():
    import numpy as np

    proba = np.array([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]])
    figures = fv.site_figures(np.array([1, 0, 1]), proba, 1.0) | fv.gate_figures(np.array([3, 0, 2]), proba[:, 1])
    empty = disclosure.shareable_validation(figures, min_cohort=10)
    assert empty[fv.COUNT_KEY] == 0 and set(empty) == set(figures) and fv.reply_problem(empty, 2, gate=True) is None
    assert not any(empty.values())
    assert disclosure.shareable_validation(figures, min_cohort=3) == figures
