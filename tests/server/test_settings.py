"""Run settings: Flower's run config and the Flower App's declared defaults agree with Settings."""
from __future__ import annotations

import json
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from common.config import ConfigError
from server.settings import ENV_RUN_CONFIG, Settings, load_settings

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_every_setting_is_a_declared_run_config_key_with_the_same_default():
    declared = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert {k.replace("-", "_") for k in declared} == {f.name for f in fields(Settings)}
    assert load_settings(declared, environ={}) == Settings()


def test_schedule_overrides_reach_the_profile_and_zero_keeps_the_profiles():
    profile = Settings(profile="cpu").build_profile()
    assert profile.train == __import__("common.config").config.get_profile("cpu").train
    train = Settings(profile="cpu", rounds=3, shared_rounds=0, local_epochs=2, batch_size=8).build_profile().train
    assert (train.rounds, train.shared_rounds, train.epochs, train.batch_size) == (3, 0, 2, 8)


def test_the_mask_weight_is_the_profiles_unless_the_run_sets_it():
    assert Settings(profile="cpu").build_profile().train.mask_weight == 0.5
    assert not Settings(profile="cpu", mask_weight=0.0).build_profile().train.mask_target
    assert load_settings({"mask-weight": 1.5}, environ={}).build_profile().train.mask_weight == 1.5
    with pytest.raises(ConfigError, match="mask_weight"):
        load_settings({"mask-weight": -0.5}, environ={})


def test_run_config_overrides_the_environment():
    env = {ENV_RUN_CONFIG: json.dumps({"rounds": 7, "profile": "tiny"})}
    settings = load_settings({"local-epochs": 2, "rounds": 5}, environ=env)
    assert (settings.rounds, settings.local_epochs, settings.profile) == (5, 2, "tiny")


@pytest.mark.parametrize("config, message", [
    ({"roundz": 3}, "unknown key"), ({"rounds": "many"}, "integer"), ({"rounds": -1}, ">= 1"),
    ({"profile": "huge"}, "unknown profile"), ({"strategy": "fedsgd"}, "strategy")])
def test_bad_run_config_is_named(config, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ={})
