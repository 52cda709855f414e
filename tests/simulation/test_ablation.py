"""`python -m simulation.ablation` trains a recipe pooled and prints one JSON line of figures."""
from __future__ import annotations

import json

from simulation.ablation import main


def test_one_json_line_per_recipe(small_dataset, capsys):
    assert main(["--data", str(small_dataset), "--profile", "tiny", "--shared-epochs", "1", "--epochs", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["recipe"]["shared_epochs"] == 1 and result["recipe"]["backbone"] == "resnet10"
    assert 0.0 <= result["macro_auc"] <= 1.0 and len(result["level_auc"]) == 3
    assert len(result["gated_recall"]) == 4 and result["test_cases"] > 0
