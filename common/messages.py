"""What travels between the server and the sites: message types, record keys and conversions.

Both sides import these names, so a renamed key cannot silently break the protocol. Only weights,
configuration, example counts and aggregate figures are ever put into a message.
"""
from __future__ import annotations

import json
from typing import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common.config import Profile, get_profile
from common.errors import ProtocolError
from common.typed_config import from_dict, to_dict

# Message types (Flower: "train" and "evaluate" are built in; custom ones are "query.<name>").
SITE_INFO = "query.site_info"
TRAIN = "train"
# Each round's global network scored on the sites' validation cases (Flower's evaluate round).
VALIDATE = "evaluate.validate"
FINAL_EVAL = "evaluate"

# Record keys inside a message's RecordDict (FedAvg's defaults for the first two).
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SITE = "site"

# The key FedAvg weights by: the number of this sub-model's local training cases.
NUM_EXAMPLES = "num-examples"


def state_to_arrays(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """A state_dict as an ArrayRecord (tensors copied to CPU)."""
    return ArrayRecord({k: v.detach().cpu() for k, v in state.items()})


def arrays_to_state(arrays: ArrayRecord, reference: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ArrayRecord back to a state_dict with the reference's keys, shapes and dtypes.

    FedAvg averages every array in floating point, so integer buffers (BatchNorm's
    num_batches_tracked) come back as float64 and are cast back here.
    """
    state = arrays.to_torch_state_dict()
    missing, extra = set(reference) - set(state), set(state) - set(reference)
    if missing or extra:
        raise ProtocolError(f"received weights do not fit the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(extra)[:5]} (server and site run different clafed versions?)")
    out = {}
    for key, ref in reference.items():
        value = state[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise ProtocolError(f"received weights for {key} have shape {tuple(value.shape)}, "
                             f"the model expects {tuple(ref.shape)}")
        out[key] = value.round().to(ref.dtype) if not ref.dtype.is_floating_point else value.to(ref.dtype)
    return out


def arrays_nbytes(arrays: ArrayRecord) -> int:
    """Payload size of an ArrayRecord (what one site downloads or uploads per round)."""
    return int(sum(len(array.data) for array in arrays.values()))


def arrays_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in arrays.items()}


def profile_to_json(profile: Profile) -> str:
    return json.dumps(to_dict(profile), sort_keys=True)


def profile_from_json(text: str) -> Profile:
    """Rebuild the profile the server trains with (sites build their networks from it)."""
    data = json.loads(text)
    return from_dict(Profile, data, "profile sent by the server") if "model" in data else get_profile(data["name"])


def config_record(values: Mapping[str, object]) -> ConfigRecord:
    """A ConfigRecord from plain values (None is dropped: Flower records cannot hold it)."""
    return ConfigRecord({k: v for k, v in values.items() if v is not None})


def metric_record(values: Mapping[str, float | int]) -> MetricRecord:
    """A MetricRecord of scalar figures; anything else is refused before it can leave a site."""
    clean: dict[str, float | int] = {}
    for key, value in values.items():
        if isinstance(value, (bool, np.bool_)):
            value = int(value)
        if isinstance(value, (np.integer, int)):
            clean[key] = int(value)
        elif isinstance(value, (np.floating, float)):
            clean[key] = float(value)
        else:
            raise TypeError(f"metric {key!r} is {type(value).__name__}: only scalar figures may leave a site")
    return MetricRecord(clean)


def train_reply(arrays: ArrayRecord, metrics: Mapping[str, float | int]) -> RecordDict:
    """The content of a site's training reply: weights plus scalar figures, nothing else."""
    return RecordDict({ARRAYS: arrays, METRICS: metric_record(metrics)})


def signed_config(profile_json: str) -> dict:
    """What a model signature covers besides the weights: the whole profile that builds and feeds
    the model (architecture, gate threshold, preprocessing)."""
    return {"profile": json.loads(profile_json)}
