"""A site refuses the final model unless the coordinator's signature matches (client path)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord

from client.final_evaluation import verify_model
from common import messages as msg
from common.config import get_profile
from common.model import CLAHDM
from common.signing import SignatureError, sign_digest, weights_digest
from server.certs import generate_credentials


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """What the server sends: weights, profile and the signature of their digest."""
    creds = generate_credentials(tmp_path_factory.mktemp("c") / "creds", ["127.0.0.1"], ["hospital1"])
    profile = get_profile("tiny")
    torch.manual_seed(0)
    model = CLAHDM(profile.model)
    arrays = msg.state_to_arrays(model.state_dict())
    profile_json = msg.profile_to_json(profile)
    signature = sign_digest(weights_digest(msg.arrays_numpy(arrays), msg.signed_config(profile_json)),
                            creds.signing_key)
    return creds, model, arrays, profile_json, signature


def site_with(key):
    return SimpleNamespace(config=SimpleNamespace(name="hospital1", coordinator_public_key=key))


def test_the_untouched_model_is_accepted(signed):
    creds, model, arrays, profile_json, signature = signed
    verify_model(site_with(creds.signing_public_key), arrays,
                 ConfigRecord({"profile": profile_json, "signature": signature}))


def test_a_tampered_weight_is_refused(signed):
    creds, model, arrays, profile_json, signature = signed
    state = msg.arrays_numpy(arrays)
    name = next(k for k, v in state.items() if v.dtype == np.float32)
    state[name] = state[name].copy()
    state[name].flat[0] += 0.01
    tampered = ArrayRecord({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    with pytest.raises(SignatureError, match="hospital1 refuses the model.*does not match"):
        verify_model(site_with(creds.signing_public_key), tampered,
                     ConfigRecord({"profile": profile_json, "signature": signature}))


def test_an_unsigned_model_is_refused(signed):
    creds, model, arrays, profile_json, _ = signed
    with pytest.raises(SignatureError, match="unsigned"):
        verify_model(site_with(creds.signing_public_key), arrays, ConfigRecord({"profile": profile_json}))


def test_a_changed_profile_is_refused(signed):
    """The signature covers the profile too: moving the gate threshold is caught."""
    creds, _, arrays, profile_json, signature = signed
    moved = msg.profile_to_json(get_profile("tiny", {"model": {"threshold": 0.3}}))
    with pytest.raises(SignatureError, match="does not match"):
        verify_model(site_with(creds.signing_public_key), arrays, ConfigRecord({"profile": moved, "signature": signature}))
