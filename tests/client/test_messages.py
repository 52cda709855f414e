"""What a site sends: weights, counts and aggregate figures, never images or per-case values."""
from __future__ import annotations

import pytest
import torch
import yaml
from flwr.app import Context, Message, RecordDict

from client import client_app
from client.disclosure import SiteFailure
from client.local_training import phase_network
from common import federated_validation as fv
from common import messages as msg
from common.labels import GATE_PHASE, LOCALISER, PHASES, SHARED
from common.localiser import NodeLocaliser
from common.model import SubModel
from tests.sitegen import write_site

TRAIN_FIGURES = {msg.NUM_EXAMPLES, "loss", "accuracy", "train_seconds", "epochs", "lr", "peak_rss_bytes",
                 "peak_gpu_bytes", "prepare_seconds",
                 "validation_seconds"}


@pytest.fixture
def site_yaml(tmp_path):
    manifest = write_site(tmp_path / "data", {"reactive": 3, "tuberculous": 3, "lymphoma": 3, "metastatic": 3})
    path = tmp_path / "hospital9.yaml"
    # min_cohort 1: these cohorts of a few cases may share their figures (tests of the rules set it).
    path.write_text(yaml.safe_dump({"name": "hospital9", "manifest": str(manifest), "batch_size": 4, "min_cohort": 1,
                                    "holdout": {"kind": "fraction", "fraction": 0.34},
                                    "output_dir": str(tmp_path / "out"), "device": "cpu"}))
    return path


def context(site_yaml) -> Context:
    return Context(run_id=1, node_id=5, node_config={"site-config": str(site_yaml)}, state=RecordDict(), run_config={})


def request(content: RecordDict, kind: str) -> Message:
    return Message(content, dst_node_id=5, message_type=kind)


def test_site_info_is_name_role_and_counts(site_yaml):
    reply = client_app.site_info(request(RecordDict(), msg.SITE_INFO), context(site_yaml))
    assert set(reply.content.keys()) == {msg.SITE, msg.METRICS}
    assert dict(reply.content[msg.SITE])["name"] == "hospital9"
    counts = dict(reply.content[msg.METRICS])
    assert all(isinstance(v, int) for v in counts.values())
    assert counts["train.total"] + counts["heldout.total"] + counts[f"validation.{SHARED}"] == 12
    assert counts[f"validation.{SHARED}"] > 0 and counts[f"train.{SHARED}"] == counts["train.total"]
    assert counts[f"train.{LOCALISER}"] == counts["train.total"]  # every training case has an ROI here


def phase_request(profile, phase: str, kind: str) -> tuple[SubModel | NodeLocaliser, Message]:
    model = phase_network(profile, phase)
    config = msg.PhaseInstruction(phase, msg.profile_to_json(profile), rounds=2).config()
    config[msg.SERVER_ROUND] = 1  # what Flower's strategy adds
    content = RecordDict({msg.ARRAYS: msg.state_to_arrays(model.state_dict()), msg.CONFIG: config})
    return model, request(content, kind)


@pytest.mark.parametrize("phase", PHASES)
def test_train_reply_holds_only_the_phase_weights_and_scalar_figures(site_yaml, tiny_profile, phase):
    model, message = phase_request(tiny_profile, phase, msg.TRAIN)
    reply = client_app.train(message, context(site_yaml))
    assert set(reply.content.keys()) == {msg.ARRAYS, msg.METRICS}
    arrays = reply.content[msg.ARRAYS]
    reference = model.state_dict()
    assert set(arrays.keys()) == set(reference)
    assert all(tuple(arrays[k].shape) == tuple(reference[k].shape) for k in reference)
    figures = dict(reply.content[msg.METRICS])
    assert set(figures) == TRAIN_FIGURES and all(isinstance(v, (int, float)) for v in figures.values())
    assert figures[msg.NUM_EXAMPLES] > 0
    changed = msg.arrays_to_state(arrays, reference)
    assert any(not torch.equal(changed[k], reference[k]) for k in reference)


@pytest.mark.parametrize("phase", [p for p in PHASES if p != LOCALISER])
def test_a_train_reply_asked_to_validate_carries_the_received_weights_validation(site_yaml, tiny_profile, phase):
    """One exchange a round: the figures a validate message would return for the same weights."""
    _, message = phase_request(tiny_profile, phase, msg.TRAIN)
    message.content[msg.CONFIG][msg.VALIDATE_RECEIVED] = True
    reply = client_app.train(message, context(site_yaml))
    figures, validation = msg.split_validation(dict(reply.content[msg.METRICS]))
    assert set(figures) == TRAIN_FIGURES and validation
    _, validate = phase_request(tiny_profile, phase, msg.VALIDATE)
    validate.content[msg.ARRAYS] = message.content[msg.ARRAYS]
    alone = dict(client_app.validate(validate, context(site_yaml)).content[msg.METRICS])
    assert validation.keys() == alone.keys()
    assert all(validation[k] == pytest.approx(alone[k], rel=1e-4, abs=1e-4) for k in alone)


@pytest.mark.parametrize("phase", [p for p in PHASES if p != LOCALISER])
def test_validation_reply_is_counts_and_sums_only(site_yaml, tiny_profile, phase):
    _, message = phase_request(tiny_profile, phase, msg.VALIDATE)
    reply = client_app.validate(message, context(site_yaml))
    assert set(reply.content.keys()) == {msg.METRICS}
    figures = dict(reply.content[msg.METRICS])
    assert all(key.startswith("val.") for key in figures)
    # Every key exists whatever the cohort: histograms of BINS counts per class and side, plus 3 sums
    # (and a binary network's summed NLL at each grid temperature).
    n_classes = 4 if phase == SHARED else 1
    gate = phase == GATE_PHASE  # the gate also counts its scores per 4-class label
    nll = len(fv.NLL_KEYS) if n_classes == 1 else 0
    assert len(figures) == 3 + n_classes * 2 * fv.BINS + (4 * fv.BINS if gate else 0) + nll
    assert fv.reply_problem(figures, 2 if n_classes == 1 else 4, gate) is None
    n = figures[fv.COUNT_KEY]
    assert 0 < n <= 4 and all(isinstance(v, int) for k, v in figures.items()
                              if k != fv.LOSS_KEY and k not in fv.NLL_KEYS)
    for k in ([1] if n_classes == 1 else range(4)):  # each case lands in exactly one bin per class
        assert sum(figures[fv.hist_key(k, side, b)] for side in (True, False) for b in range(fv.BINS)) == n


def test_the_localiser_phase_has_no_validation(site_yaml, tiny_profile):
    _, message = phase_request(tiny_profile, LOCALISER, msg.VALIDATE)
    with pytest.raises(SiteFailure, match="the localiser phase has no federated validation"):
        client_app.validate(message, context(site_yaml))


def test_an_unknown_phase_is_refused_by_name(site_yaml, tiny_profile):
    _, message = phase_request(tiny_profile, "submodel1", msg.TRAIN)
    message.content[msg.CONFIG]["phase"] = "submodel9"
    with pytest.raises(SiteFailure, match="unknown training phase 'submodel9'"):
        client_app.train(message, context(site_yaml))


def test_a_node_without_a_site_says_how_to_configure_it():
    ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(SiteFailure, match="the site's configuration is invalid"):
        client_app.site_info(request(RecordDict(), msg.SITE_INFO), ctx)


def test_the_runs_batch_size_reaches_the_sites_training(site_yaml, tiny_profile, monkeypatch):
    """The run config decides how sites train; the site YAML's batch_size is for local inference."""
    from dataclasses import replace

    from client import local_training

    seen = []
    real = local_training.train_submodel
    monkeypatch.setattr(local_training, "train_submodel",
                        lambda model, dataset, cfg, **kw: seen.append(cfg.batch_size) or real(model, dataset, cfg, **kw))
    profile = replace(tiny_profile, train=replace(tiny_profile.train, batch_size=3))
    _, message = phase_request(profile, "submodel1", msg.TRAIN)
    client_app.train(message, context(site_yaml))
    assert seen == [3]  # the YAML says 4


def test_a_resumed_round_continues_the_schedule(site_yaml, tiny_profile):
    from common.training import lr_factor

    _, message = phase_request(tiny_profile, "submodel2", msg.TRAIN)
    message.content[msg.CONFIG]["round-offset"] = 1  # round 2 of 2, after a restart
    figures = dict(client_app.train(message, context(site_yaml)).content[msg.METRICS])
    train = tiny_profile.train
    assert figures["lr"] == pytest.approx(train.lr * lr_factor(1.0, train.warmup, train.lr_floor))


def test_instructions_survive_the_trip_and_refuse_malformed_configs(tiny_profile):
    from common.errors import ProtocolError

    sent = msg.PhaseInstruction("submodel2", msg.profile_to_json(tiny_profile), rounds=4, round_offset=1, seed=7)
    config = sent.config()
    config[msg.SERVER_ROUND], config[msg.PROXIMAL_MU] = 2, 0.01  # what Flower's FedProx adds
    received = msg.PhaseInstruction.from_config(config)
    assert (received.phase, received.round, received.rounds, received.seed, received.proximal_mu) == \
        ("submodel2", 3, 4, 7, 0.01)
    assert received.profile == tiny_profile
    del config["rounds"]
    with pytest.raises(ProtocolError, match="lacks 'rounds'"):
        msg.PhaseInstruction.from_config(config)
    config["rounds"] = "4"
    with pytest.raises(ProtocolError, match="'rounds' must be a int"):
        msg.PhaseInstruction.from_config(config)
    final = msg.EvaluationInstruction(msg.profile_to_json(tiny_profile), run="r1", bootstrap=50, seed=0)
    assert msg.EvaluationInstruction.from_config(final.config()) == final  # no signature: the key is absent
    signed = msg.EvaluationInstruction(final.profile_json, run="r1", bootstrap=50, seed=0, signature=b"\x01" * 64)
    assert msg.EvaluationInstruction.from_config(signed.config()) == signed


def test_training_settings_come_from_the_profile_and_where_to_run_from_the_site(site_yaml, tiny_profile,
                                                                                 monkeypatch):
    """The documented precedence of client.local_training.local_train_config."""
    from dataclasses import replace

    from client.local_training import local_train_config
    from common.site import load_site

    site = load_site(site_yaml)  # its YAML: batch_size 4, device cpu
    profile = replace(tiny_profile, train=replace(tiny_profile.train, batch_size=3, lr=0.02, device="cuda"))
    monkeypatch.setenv("CLAFED_PROGRESS", "0")
    cfg = local_train_config(profile, site, seed=11)
    assert (cfg.batch_size, cfg.lr, cfg.epochs) == (3, 0.02, tiny_profile.train.epochs)  # the profile's
    assert (cfg.device, cfg.num_workers) == ("cpu", site.config.num_workers)  # the site's
    assert cfg.seed == 11 and cfg.progress is False  # the round's seed; the environment's display


def test_an_fp16_round_is_answered_with_an_fp16_update(site_yaml, tiny_profile):
    model = phase_network(tiny_profile, GATE_PHASE)
    config = msg.PhaseInstruction(GATE_PHASE, msg.profile_to_json(tiny_profile), rounds=2, transfer="fp16").config()
    config[msg.SERVER_ROUND] = 1
    sent = msg.half_arrays(msg.state_to_arrays(model.state_dict()))
    reply = client_app.train(request(RecordDict({msg.ARRAYS: sent, msg.CONFIG: config}), msg.TRAIN),
                             context(site_yaml))
    update = reply.content[msg.ARRAYS]
    reference = model.state_dict()
    floats = [k for k, v in reference.items() if v.dtype.is_floating_point]
    assert all(str(update[k].numpy().dtype) == "float16" for k in floats)
    # An update, not weights: small next to the weights, and not zero (the site trained).
    weights = sum(float(reference[k].abs().sum()) for k in floats)
    moved = sum(float(abs(update[k].numpy().astype("float32")).sum()) for k in floats)
    assert 0 < moved < 0.5 * weights
