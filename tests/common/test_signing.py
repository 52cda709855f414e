"""Signed models: a site accepts exactly the coordinator's unmodified model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.signing import (
    SignatureError,
    sign_checkpoint,
    sign_digest,
    signature_path,
    verify_checkpoint,
    verify_digest,
    weights_digest,
)
from server.certs import generate_credentials


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two independent credential sets: the coordinator's and an impostor's."""
    base = tmp_path_factory.mktemp("keys")
    ours = generate_credentials(base / "ours", ["127.0.0.1"], ["hospital1"])
    theirs = generate_credentials(base / "theirs", ["127.0.0.1"], ["hospital1"])
    return ours, theirs


STATE = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": torch.ones(4)}
CONFIG = {"rounds": 1, "profile": "tiny"}


def test_digest_is_order_independent_and_sees_dtype_shape_and_config():
    digest = weights_digest(STATE, CONFIG)
    assert digest == weights_digest(dict(reversed(list(STATE.items()))), dict(reversed(list(CONFIG.items()))))
    assert digest == weights_digest({k: torch.as_tensor(np.asarray(v)) for k, v in STATE.items()}, CONFIG)
    assert digest != weights_digest({**STATE, "b": STATE["b"].astype(np.float64)}, CONFIG)
    assert digest != weights_digest({**STATE, "b": STATE["b"].reshape(3, 2)}, CONFIG)
    assert digest != weights_digest({**STATE, "b": STATE["b"].reshape(6)}, CONFIG)
    assert digest != weights_digest(STATE, {**CONFIG, "rounds": 2})


def test_digest_round_trip_and_refusals(keys):
    ours, theirs = keys
    digest = weights_digest(STATE, CONFIG)
    signature = sign_digest(digest, ours.signing_key)
    verify_digest(digest, signature, ours.signing_public_key)

    changed = {**STATE, "b": STATE["b"].copy()}
    changed["b"][1, 2] += 1e-3
    with pytest.raises(SignatureError, match="does not match"):
        verify_digest(weights_digest(changed, CONFIG), signature, ours.signing_public_key)
    with pytest.raises(SignatureError, match="does not match"):
        verify_digest(weights_digest(STATE, {**CONFIG, "profile": "paper"}), signature, ours.signing_public_key)
    with pytest.raises(SignatureError, match="unsigned"):
        verify_digest(digest, None, ours.signing_public_key)
    with pytest.raises(SignatureError, match="does not match"):
        verify_digest(digest, sign_digest(digest, theirs.signing_key), ours.signing_public_key)


def test_unusable_keys_are_named(keys, tmp_path):
    ours, _ = keys
    digest = weights_digest(STATE, CONFIG)
    signature = sign_digest(digest, ours.signing_key)
    with pytest.raises(SignatureError, match="not found.*coordinator_public_key"):
        verify_digest(digest, signature, tmp_path / "missing.pub")
    # A SuperNode key (ECDSA, OpenSSH) is not the coordinator's Ed25519 signing key.
    with pytest.raises(SignatureError, match="not a PEM public key"):
        verify_digest(digest, signature, ours.site_keys["hospital1"][1])
    with pytest.raises(SignatureError, match="not an Ed25519"):
        verify_digest(digest, signature, _ec_public_pem(tmp_path))
    with pytest.raises(SignatureError, match="expected an Ed25519 private key"):
        sign_digest(digest, ours.server_key)


def _ec_public_pem(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    path = tmp_path / "ec.pub"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_checkpoint_round_trip(keys, checkpoint, tmp_path):
    ours, _ = keys
    sig = sign_checkpoint(checkpoint, ours.signing_key)
    assert sig == checkpoint.with_name("model.sig") == signature_path(checkpoint)
    verify_checkpoint(checkpoint, ours.signing_public_key)


def _copy_with(payload_change, checkpoint, tmp_path, keys):
    """A signed checkpoint's copy whose payload was altered after signing (signature kept)."""
    ours, _ = keys
    sign_checkpoint(checkpoint, ours.signing_key)
    payload = torch.load(checkpoint, weights_only=True)
    payload_change(payload)
    tampered = tmp_path / "model.pt"
    torch.save(payload, tampered)
    signature_path(tampered).write_bytes(signature_path(checkpoint).read_bytes())
    return tampered


def test_checkpoint_with_one_changed_weight_is_refused(keys, checkpoint, tmp_path):
    def bump(payload):
        name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
        payload["state_dict"][name].view(-1)[0] += 0.01
    tampered = _copy_with(bump, checkpoint, tmp_path, keys)
    with pytest.raises(SignatureError, match="model.pt.*does not match"):
        verify_checkpoint(tampered, keys[0].signing_public_key)


def test_checkpoint_with_changed_config_is_refused(keys, checkpoint, tmp_path):
    def move_threshold(payload):
        payload["model_config"]["threshold"] = 0.3
    tampered = _copy_with(move_threshold, checkpoint, tmp_path, keys)
    with pytest.raises(SignatureError, match="does not match"):
        verify_checkpoint(tampered, keys[0].signing_public_key)


def test_unsigned_and_foreign_checkpoints_are_refused(keys, checkpoint, tmp_path):
    ours, theirs = keys
    unsigned = tmp_path / "unsigned.pt"
    unsigned.write_bytes(checkpoint.read_bytes())
    with pytest.raises(SignatureError, match="unsigned"):
        verify_checkpoint(unsigned, ours.signing_public_key)
    sign_checkpoint(unsigned, theirs.signing_key)
    with pytest.raises(SignatureError, match="does not match"):
        verify_checkpoint(unsigned, ours.signing_public_key)

