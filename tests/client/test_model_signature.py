"""A site refuses a final model the coordinator did not sign (tampered, unsigned, other key)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from client.final_evaluation import verify_model
from common import messages as msg
from common.config import SiteConfig
from common.model import CLAHDM
from common.signing import SignatureError, sign_digest, weights_digest
from common.site import SiteData


def write_keys(folder, name):
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture
def signed(tmp_path, tiny_profile):
    """What the server sends: arrays + config with the signature (as server/recorder.py builds it)."""
    private, public = write_keys(tmp_path, "coordinator")
    arrays = msg.state_to_arrays(CLAHDM(tiny_profile.model).state_dict())
    profile_json = msg.profile_to_json(tiny_profile)
    digest = weights_digest(msg.arrays_numpy(arrays), msg.signed_config(profile_json))
    config = msg.config_record({"profile": profile_json, "signature": sign_digest(digest, private)})
    site = SiteData(SiteConfig(name="h1", manifest=tmp_path / "m.csv", coordinator_public_key=public), [], [])
    return site, arrays, config


def test_the_coordinators_model_is_accepted(signed):
    verify_model(*signed)


def test_a_changed_weight_is_refused(signed):
    site, arrays, config = signed
    key = next(k for k in arrays if arrays[k].numpy().dtype == np.float32)
    values = arrays[key].numpy().copy()
    values.flat[0] += 1e-3
    tampered = msg.state_to_arrays({**arrays.to_torch_state_dict(), key: torch.from_numpy(values)})
    with pytest.raises(SignatureError, match="h1 refuses the model.*altered"):
        verify_model(site, tampered, config)


def test_a_changed_profile_is_refused(signed, tiny_profile):
    site, arrays, config = signed
    other = tiny_profile.__class__(tiny_profile.name, tiny_profile.model.__class__(
        **{**tiny_profile.model.__dict__, "threshold": 0.9}), tiny_profile.data, tiny_profile.train)
    config["profile"] = msg.profile_to_json(other)
    with pytest.raises(SignatureError, match="altered"):
        verify_model(site, arrays, config)


def test_unsigned_and_foreign_models_are_refused(signed, tmp_path):
    site, arrays, config = signed
    unsigned = msg.config_record({"profile": config["profile"]})
    with pytest.raises(SignatureError, match="unsigned"):
        verify_model(site, arrays, unsigned)
    _, stranger = write_keys(tmp_path, "stranger")
    site.config = site.config.__class__(**{**site.config.__dict__, "coordinator_public_key": stranger})
    with pytest.raises(SignatureError, match="altered or signed by someone else"):
        verify_model(site, arrays, config)
