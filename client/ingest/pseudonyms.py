"""Case ids that cannot be traced back without the site's secret: HMAC-SHA256 of the study UID.

A plain hash of a StudyInstanceUID could be reversed by anyone holding the PACS's UIDs; keyed
with a secret kept at the site, the id says nothing, yet the site can recompute it to find its
patient again. The same salt gives the same ids, so re-ingesting a grown export keeps them.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from common.errors import ClafedError

SALT_BYTES = 32
ID_HEX = 16  # 64 bits: no collision within any hospital's lifetime of nodes


def load_or_create_salt(path: Path) -> bytes:
    """The site's secret from `path`, created (owner-only) when the file does not exist."""
    if path.is_file():
        text = path.read_text(encoding="ascii", errors="replace").strip()
        try:
            salt = bytes.fromhex(text)
        except ValueError:
            salt = b""
        if len(salt) < 16:
            raise ClafedError(f"{path}: not an ingest salt (expected at least 32 hex digits); restore the "
                              "site's salt file, or case ids will change")
        return salt
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_bytes(SALT_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(salt.hex() + "\n")
    return salt


def case_id(salt: bytes, study_uid: str, node: int) -> str:
    """The pseudonymous case id of node `node` of a study."""
    digest = hmac.new(salt, f"{study_uid}/{node}".encode(), hashlib.sha256).hexdigest()
    return f"c{digest[:ID_HEX]}"
