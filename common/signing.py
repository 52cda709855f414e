"""Models signed by the coordinator (Ed25519); sites refuse any model whose signature fails.

One scheme: `model_digest` covers the weights (names, dtypes, shapes, raw bytes), the model and
data configs that build and feed the model (architecture, thresholds, preprocessing) and the
class order, so a changed weight, a swapped backbone or a moved threshold are all caught. The
final model sent to the sites and its `model.pt` next to `model.sig` have the same digest, so
one signature serves both. Keys come from `clafed certs` (model_signing.key stays with the
coordinator, model_signing.pub goes to every site).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from common.errors import ClafedError

SIGNATURE_SUFFIX = ".sig"


class SignatureError(ClafedError, ValueError):
    """A model is unsigned, its signature does not match, or the key cannot be used."""


def _as_array(value: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        # numpy has no bfloat16: hash its bits so the digest still reflects every weight.
        if value.dtype == torch.bfloat16:
            return value.view(torch.int16).numpy()
        return value.numpy()
    return np.asarray(value)


def weights_digest(state: Mapping[str, np.ndarray | torch.Tensor], config: Mapping) -> str:
    """Hex SHA-256 over the sorted weights (key, dtype, shape, bytes) and the canonical config JSON."""
    h = hashlib.sha256()
    for key in sorted(state):
        array = np.ascontiguousarray(_as_array(state[key]))
        h.update(key.encode())
        h.update(array.dtype.str.encode())
        h.update(json.dumps(list(array.shape)).encode())
        h.update(array.tobytes())
    h.update(json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode())
    return h.hexdigest()


def model_digest(state: Mapping[str, np.ndarray | torch.Tensor], model_config: Mapping,
                 data_config: Mapping) -> str:
    """The digest a model's signature covers: weights, model and data configs, class order."""
    from common.labels import CLASSES

    return weights_digest(state, {"classes": list(CLASSES), "model_config": dict(model_config),
                                  "data_config": dict(data_config)})


def _load_private(path: Path) -> ed25519.Ed25519PrivateKey:
    path = Path(path)
    if not path.is_file():
        raise SignatureError(f"model signing key not found: {path}; generate it with `clafed certs`")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise SignatureError(f"{path}: not a PEM private key ({err})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path}: expected an Ed25519 private key (model_signing.key from `clafed certs`)")
    return key


def _load_public(path: Path) -> ed25519.Ed25519PublicKey:
    path = Path(path)
    hint = "ask the coordinator for model_signing.pub and set coordinator_public_key in the site YAML"
    if not path.is_file():
        raise SignatureError(f"coordinator public key not found: {path}; {hint}")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError):
        raise SignatureError(f"{path}: not a PEM public key; {hint}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"{path}: not an Ed25519 public key; {hint}")
    return key


def sign_digest(digest: str, private_key_path: Path) -> bytes:
    """Sign a `weights_digest` with the coordinator's Ed25519 private key."""
    return _load_private(private_key_path).sign(digest.encode())


def verify_digest(digest: str, signature: bytes | None, public_key_path: Path) -> None:
    """Raise SignatureError unless `signature` is the coordinator's signature of `digest`."""
    key = _load_public(public_key_path)
    if not signature:
        raise SignatureError("refusing an unsigned model: the coordinator must sign every model it sends; "
                             "do not use it and contact the coordinator")
    try:
        key.verify(bytes(signature), digest.encode())
    except InvalidSignature:
        raise SignatureError(
            f"refusing a model whose signature does not match the coordinator key {public_key_path}: it was "
            "altered or signed by someone else; do not use it and contact the coordinator") from None


def checkpoint_digest(ckpt: Path) -> str:
    """The digest of a checkpoint's weights, model and data configs and class order.

    Hashes the tensors exactly as stored (read with weights_only, no code runs) instead of
    rebuilding the network: what a site will load is what gets verified, and it takes no seconds.
    """
    from common.checkpoint import FORMAT

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {ckpt}")
    try:
        payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise SignatureError(f"{ckpt}: not a readable clafed checkpoint ({err.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SignatureError(f"{ckpt}: not a clafed CLA-HDM checkpoint (expected format {FORMAT})")
    from common.labels import CLASSES

    if list(payload.get("classes", [])) != list(CLASSES):
        raise SignatureError(f"{ckpt}: class order {payload.get('classes')} differs from {list(CLASSES)}")
    return model_digest(payload["state_dict"], payload["model_config"], payload["data_config"])


def signature_path(ckpt: Path) -> Path:
    """`model.pt` -> `model.sig`, next to it."""
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.stem + SIGNATURE_SUFFIX)


def sign_checkpoint(ckpt: Path, private_key: Path) -> Path:
    """Write `<stem>.sig` next to the checkpoint and return its path."""
    return write_signature(ckpt, sign_digest(checkpoint_digest(ckpt), private_key))


def write_signature(ckpt: Path, signature: bytes) -> Path:
    """Put a signature of the checkpoint's digest in `<stem>.sig` next to it."""
    out = signature_path(ckpt)
    out.write_bytes(signature)
    return out


def verify_checkpoint(ckpt: Path, public_key: Path) -> None:
    """Raise SignatureError unless `<stem>.sig` is the coordinator's signature of the checkpoint."""
    sig = signature_path(ckpt)
    signature = sig.read_bytes() if sig.is_file() else None
    try:
        verify_digest(checkpoint_digest(ckpt), signature, public_key)
    except SignatureError as err:
        raise SignatureError(f"{ckpt}: {err}") from None
