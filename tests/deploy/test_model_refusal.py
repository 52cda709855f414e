"""A site refuses the final model unless the coordinator's signature matches (client path)."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from client.final_evaluation import verify_model
from common import messages as msg
from common.config import get_profile
from common.model import CLAHDM
from common.signing import SignatureError, sign_digest
from server.certs import generate_credentials


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """What the server sends: weights, and the instruction with the signature of weights + profile."""
    creds = generate_credentials(tmp_path_factory.mktemp("c") / "creds", ["127.0.0.1"], ["hospital1"])
    profile = get_profile("tiny")
    torch.manual_seed(0)
    arrays = msg.state_to_arrays(CLAHDM(profile.model).state_dict())
    profile_json = msg.profile_to_json(profile)
    signature = sign_digest(msg.sent_model_digest(arrays, profile_json), creds.signing_key)
    instruction = msg.EvaluationInstruction(profile_json, run="run1", bootstrap=20, seed=0, signature=signature)
    return creds, arrays, instruction


def site_with(key):
    return SimpleNamespace(config=SimpleNamespace(name="hospital1", coordinator_public_key=key))


def test_the_untouched_model_is_accepted(signed):
    creds, arrays, instruction = signed
    verify_model(site_with(creds.signing_public_key), arrays, instruction)


def test_a_tampered_weight_is_refused(signed):
    creds, arrays, instruction = signed
    state = msg.arrays_numpy(arrays)
    name = next(k for k, v in state.items() if v.dtype == np.float32)
    state[name] = state[name].copy()
    state[name].flat[0] += 0.01
    tampered = ArrayRecord({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    with pytest.raises(SignatureError, match="hospital1 refuses the model.*does not match"):
        verify_model(site_with(creds.signing_public_key), tampered, instruction)


def test_an_unsigned_model_is_refused(signed):
    creds, arrays, instruction = signed
    with pytest.raises(SignatureError, match="unsigned"):
        verify_model(site_with(creds.signing_public_key), arrays, replace(instruction, signature=None))


def test_a_changed_profile_is_refused(signed):
    """The signature covers the profile too: moving the gate threshold is caught."""
    creds, arrays, instruction = signed
    moved = msg.profile_to_json(get_profile("tiny", {"model": {"threshold": 0.3}}))
    with pytest.raises(SignatureError, match="does not match"):
        verify_model(site_with(creds.signing_public_key), arrays, replace(instruction, profile_json=moved))


def test_a_model_signed_by_someone_else_is_refused(signed, tmp_path):
    creds, arrays, instruction = signed
    other = generate_credentials(tmp_path / "other", ["127.0.0.1"], ["hospital1"])  # another coordinator
    digest = msg.sent_model_digest(arrays, instruction.profile_json)
    forged = replace(instruction, signature=sign_digest(digest, other.signing_key))
    with pytest.raises(SignatureError, match="does not match"):
        verify_model(site_with(creds.signing_public_key), arrays, forged)


def test_without_a_key_configured_the_model_is_used_with_a_warning(signed, caplog):
    _, arrays, instruction = signed
    verify_model(site_with(None), arrays, instruction)
    assert "not verified" in caplog.text


def test_the_sent_model_and_the_saved_checkpoint_share_one_digest(tmp_path):
    """One signature scheme: what the sites verify is what model.sig covers."""
    from common.checkpoint import save_checkpoint
    from common.signing import checkpoint_digest

    profile = get_profile("tiny", {"model": {"threshold": 0.3, "subtype_thresholds": [0.4, 0.6]}})
    model = CLAHDM(profile.model)
    save_checkpoint(tmp_path / "model.pt", model, profile.data)
    arrays = msg.state_to_arrays(model.state_dict())
    assert checkpoint_digest(tmp_path / "model.pt") == msg.sent_model_digest(arrays, msg.profile_to_json(profile))
