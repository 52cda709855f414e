"""The deployment benchmark's round table: wall time between rounds, compute, the rest."""
from __future__ import annotations

import json

import pytest

from simulation.deploy_benchmark import round_rows


def test_rows_measure_each_round_from_the_previous_one_of_its_phase(tmp_path):
    def record(level, rnd, at, compute, prepare=0.0):
        return {"level": level, "round": rnd, "finished_at": at, "compute_seconds": compute,
                "sites": {"h1": {"prepare_seconds": prepare}}, "bytes_sent_per_site": 2e6,
                "bytes_received_per_site": 4e6}

    lines = [record("shared", 1, 100.0, 5.0, prepare=3.0), record("shared", 2, 110.0, 6.0),
             record("submodel1", 1, 130.0, 4.0), record("submodel1", 2, 137.5, 4.5, prepare=0.5)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    rows = round_rows(tmp_path)
    # A phase's first round has no previous round to measure from.
    assert [(r["level"], r["round"]) for r in rows] == [("shared", 2), ("submodel1", 2)]
    assert rows[0]["wall"] == pytest.approx(10.0) and rows[0]["other"] == pytest.approx(4.0)
    assert rows[1]["wall"] == pytest.approx(7.5) and rows[1]["prepare"] == pytest.approx(0.5)
    assert rows[1]["mb_up"] == pytest.approx(2.0) and rows[1]["mb_down"] == pytest.approx(4.0)
