"""One-file CLA-HDM checkpoints (weights + config + class order), loaded without unpickling code."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.config import DataConfig, ModelConfig
from common.labels import CLASSES
from common.model import CLAHDM
from common.typed_config import from_dict, to_dict

FORMAT = "clafed-clahdm/1"


@dataclass(frozen=True)
class LoadedModel:
    """A CLA-HDM rebuilt from a checkpoint, with the preprocessing it was trained with."""

    model: CLAHDM
    model_config: ModelConfig
    data_config: DataConfig
    metadata: dict[str, Any]


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write with torch.save to a temporary file in the same folder, then rename over `path`.

    A crash mid-write leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_payload(model: CLAHDM, data_cfg: DataConfig, metadata: dict | None = None) -> dict:
    """The plain dict a checkpoint file holds: only tensors, strings and numbers."""
    model_cfg = dict(to_dict(model.config), threshold=float(model.threshold),
                     subtype_thresholds=[float(t) for t in model.subtype_thresholds],
                     temperatures=[float(t) for t in model.temperatures])
    return {
        "format": FORMAT,
        "classes": list(CLASSES),
        "model_config": model_cfg,
        "data_config": to_dict(data_cfg),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata or {},
    }


def save_checkpoint(path: str | Path, model: CLAHDM, data_cfg: DataConfig, metadata: dict | None = None) -> None:
    """Save a CLA-HDM with the config that built it and the class order, atomically."""
    atomic_torch_save(checkpoint_payload(model, data_cfg, metadata), path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a CLA-HDM from `save_checkpoint`'s file (weights_only: no arbitrary code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{path}: not a readable clafed checkpoint ({err.__class__.__name__}: {err})") from None
    return model_from_payload(payload, str(path))


def model_from_payload(payload: Any, source: str = "checkpoint") -> LoadedModel:
    """Rebuild the model from a checkpoint dict, checking its format and class order."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{source}: not a clafed CLA-HDM checkpoint (expected format {FORMAT})")
    if tuple(payload.get("classes", ())) != CLASSES:
        raise ValueError(f"{source}: class order {payload['classes']} differs from {list(CLASSES)}")
    if not all(isinstance(payload.get(key), dict) for key in ("model_config", "data_config", "state_dict")):
        raise ValueError(f"{source}: the checkpoint lacks its model_config, data_config or state_dict")
    model_cfg = from_dict(ModelConfig, payload["model_config"], source)
    data_cfg = from_dict(DataConfig, payload["data_config"], source)
    model = CLAHDM(model_cfg)  # built only: the file holds every weight
    state = payload["state_dict"]
    # A model saved before localisers existed loads without one (it then needs an ROI per case).
    older = isinstance(state, dict) and not any(str(k).startswith("localiser") for k in state)
    try:
        missing, unexpected = model.load_state_dict(state, strict=not older)
        lacking = [k for k in missing if not k.startswith("localiser")]
        if lacking or unexpected:
            raise RuntimeError(f"missing weights {lacking[:3]}, unexpected weights {unexpected[:3]}")
    except (RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ValueError(f"{source}: its weights do not fit the {model_cfg.backbone} CLA-HDM its own config "
                         f"describes ({first}); the file was altered or written by another program") from None
    model.eval()
    return LoadedModel(model, model_cfg, data_cfg, dict(payload.get("metadata", {})))
