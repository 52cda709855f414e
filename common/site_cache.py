"""What a site derives from its own images, kept on its own disk between the processes of a run.

Flower starts a fresh ClientApp process for every message, so without this each round would
validate and decode every image of the site again. The cache lives in the site's output folder
(`OUTPUT_DIR/cache`, owner-only permissions) and is never sent anywhere: it holds image crops,
which are patient data like the images they come from.

One folder per version of the site's files (a key over its YAML, its manifest and the
modification time and size of every image it lists), one file per setting the content depends
on: a changed file or setting finds no file and the cache is rebuilt; older versions are deleted.
Files are written atomically and read without pickle (arrays in an npz, the rest as JSON text); a
file that cannot be read is ignored and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

CACHE_DIR = "cache"
# Raise when what the cache holds changes meaning: old files are then never read again.
FORMAT = 1

# One case's cached images: (image, box) pairs (its BUS and CDFI crops, or its localiser frame).
Entry = tuple[tuple[np.ndarray, tuple[float, ...]], ...]

log = logging.getLogger("clafed.site")


def version_dir(output_dir: Path, fingerprint: tuple) -> Path:
    """The cache folder of this version of the site's files (created owner-only); the folders of
    older versions are deleted, so a changed manifest leaves no stale crops behind."""
    root = Path(output_dir) / CACHE_DIR
    folder = root / _key(fingerprint)
    if not folder.is_dir():
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for old in root.iterdir():
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def settings_key(*settings: object) -> str:
    """A file-name-safe key for the settings some cached content depends on."""
    return _key(tuple(repr(s) for s in settings))


def is_validated(folder: Path, limits: str) -> bool:
    """Whether this version of the files passed the site's full validation under `limits`."""
    return (folder / f"validated-{limits}").is_file()


def mark_validated(folder: Path, limits: str) -> None:
    _write_atomic(folder / f"validated-{limits}", b"every image decoded and checked\n")


def load_images(path: Path) -> dict[str, Entry]:
    """The entries stored at `path` by case id ({} when there is none or it cannot be read)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as stored:
            index = json.loads(str(stored["index"]))
            return {case_id: tuple((stored[f"a{i}"], tuple(box)) for i, box in pairs)
                    for case_id, pairs in index.items()}
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        log.warning("ignoring the unreadable image cache %s (%s); it will be rebuilt", path, err)
        return {}


def save_images(path: Path, entries: dict[str, Entry]) -> None:
    """Store `entries` at `path` (replacing what was there in one step)."""
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, list] = {}
    for case_id, pairs in entries.items():
        index[case_id] = []
        for image, box in pairs:
            index[case_id].append([len(arrays), [float(v) for v in box]])
            arrays[f"a{len(arrays)}"] = np.ascontiguousarray(image)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", suffix=".npz", delete=False) as out:
        try:
            np.savez(out, index=np.array(json.dumps(index)), **arrays)  # type: ignore[arg-type]
        except BaseException:
            os.unlink(out.name)
            raise
    _finish_atomic(Path(out.name), path)


def _key(parts: tuple) -> str:
    text = json.dumps([FORMAT, list(parts)], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _write_atomic(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as out:
        out.write(data)
    _finish_atomic(Path(out.name), path)


def _finish_atomic(tmp: Path, path: Path) -> None:
    tmp.chmod(0o600)
    os.replace(tmp, path)
