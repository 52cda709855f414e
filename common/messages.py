"""What travels between the server and the sites: message types, typed instructions and replies.

Both sides build and read messages only through this module, so a renamed key cannot silently
break the protocol, and a malformed message is refused with a ProtocolError naming the key.
Only weights, configuration, case counts and aggregate figures are ever put into a message.

    query.site_info     ->  SiteDescription (name, role, cohort, case counts)
    query.preflight     ->  aggregate data-quality figures (client/preflight.py), before round 1
    train               ->  PhaseInstruction + weights  ->  weights + training figures
    evaluate.validate   ->  PhaseInstruction + weights  ->  validation counts (federated_validation)
    evaluate            ->  EvaluationInstruction + CLA-HDM weights  ->  aggregate figures
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, TypeVar, cast

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, MetricRecord, RecordDict
from flwr.app.typing import ConfigRecordValues, MetricRecordValues

from common.config import Profile, get_profile
from common.errors import ProtocolError
from common.typed_config import from_dict, to_dict

# Message types: Flower's own, and named variants of them ("<type>.<name>").
SITE_INFO = f"{MessageType.QUERY}.site_info"
PREFLIGHT = f"{MessageType.QUERY}.preflight"
TRAIN = MessageType.TRAIN
# Each round's global network scored on the sites' validation cases (Flower's evaluate round).
VALIDATE = f"{MessageType.EVALUATE}.validate"
FINAL_EVAL = MessageType.EVALUATE

# Record keys inside a message's RecordDict (FedAvg's defaults for the first two).
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SITE = "site"

# The key FedAvg weights by: the number of this sub-model's local training cases.
NUM_EXAMPLES = "num-examples"
# Set by Flower's strategies in every train/evaluate config: the round within this strategy run.
SERVER_ROUND = "server-round"
VALIDATE_RECEIVED = "validate-received"
# A training reply's validation figures of the weights it received (PhaseInstruction.validate_received).
VALIDATION_PREFIX = "received-validation."
# Added by Flower's FedProx to the train config.
PROXIMAL_MU = "proximal-mu"


def train_count(phase: str) -> str:
    """Key of a site's count of training cases for a phase (`shared` or a sub-model)."""
    return f"train.{phase}"


def validation_count(phase: str) -> str:
    """Key of a site's count of validation cases for a phase."""
    return f"validation.{phase}"


TRAIN_TOTAL, HELDOUT_TOTAL = "train.total", "heldout.total"


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


# How weights travel in train and validate messages (Settings.transfer): fp32 as trained, or fp16
# both ways (half the bytes), the server keeping and averaging fp32.
TRANSFERS = ("fp32", "fp16")
FP16_MAX = float(np.finfo(np.float16).max)


def half_arrays(arrays: ArrayRecord) -> ArrayRecord:
    """fp32 weights as fp16 for the way out; a tensor fp16 cannot hold (|x| > 65504) stays fp32,
    and integer buffers are kept as they are."""
    out = {}
    for key, array in arrays.items():
        values = array.numpy()
        if values.dtype == np.float32 and (values.size == 0 or float(np.abs(values).max()) <= FP16_MAX):
            values = values.astype(np.float16)
        out[key] = Array(np.array(values, order="C"))  # ascontiguousarray would make 0-d arrays 1-d
    return ArrayRecord(out)


def update_arrays(trained: Mapping[str, torch.Tensor], received: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """A site's fp16 reply: its update (trained - received weights) per floating tensor, integer
    buffers as they are. The update, not the weights: a step smaller than fp16's spacing at the
    weight's magnitude would otherwise round away at every round."""
    out = {}
    for key, value in trained.items():
        value = value.detach().cpu()
        if value.dtype.is_floating_point:
            value = (value.float() - received[key].detach().cpu().float()).to(torch.float16)
        out[key] = value
    return ArrayRecord(out)


def applied_update(update: ArrayRecord, sent: ArrayRecord) -> ArrayRecord:
    """The server's view of an fp16 reply: the fp32 weights it sent plus the site's update (the
    integer buffers are the site's own); an update beyond fp16's range arrives infinite and is
    refused by the reply checks before this is called."""
    out = {}
    for key, array in update.items():
        values, reference = array.numpy(), sent[key].numpy()
        if reference.dtype.kind == "f":
            values = reference.astype(np.float32) + values.astype(np.float32)
        out[key] = Array(np.array(values, order="C"))
    return ArrayRecord(out)


def cast_like(arrays: ArrayRecord, dtypes: Mapping[str, np.dtype]) -> ArrayRecord:
    """`arrays` in the model's own dtypes: Flower's averages turn integer buffers into float64 and
    FedAdam's step turns fp32 weights into float64; integers are rounded back."""
    out = {}
    for key, array in arrays.items():
        values, dtype = array.numpy(), np.dtype(dtypes[key])
        if values.dtype != dtype:
            values = (np.rint(values) if dtype.kind in "iub" else values).astype(dtype)
        out[key] = Array(np.array(values, order="C"))
    return ArrayRecord(out)


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
    return ConfigRecord({k: cast(ConfigRecordValues, v) for k, v in values.items() if v is not None})


def metric_record(values: Mapping[str, float | int]) -> MetricRecord:
    """A MetricRecord of scalar figures; anything else is refused before it can leave a site."""
    clean: dict[str, MetricRecordValues] = {}
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


def split_validation(metrics: Mapping[str, float | int]) -> tuple[dict, dict]:
    """A training reply's figures as (training figures, validation figures without the prefix)."""
    train = {k: v for k, v in metrics.items() if not k.startswith(VALIDATION_PREFIX)}
    validation = {k[len(VALIDATION_PREFIX):]: v for k, v in metrics.items() if k.startswith(VALIDATION_PREFIX)}
    return train, validation


def train_reply(arrays: ArrayRecord, metrics: Mapping[str, float | int]) -> RecordDict:
    """The content of a site's training reply: weights plus scalar figures, nothing else."""
    return RecordDict({ARRAYS: arrays, METRICS: metric_record(metrics)})


def sent_model_digest(arrays: ArrayRecord, profile_json: str) -> str:
    """The signed digest of a CLA-HDM sent with this profile (common.signing.model_digest): the same
    as that of the checkpoint the coordinator saved, so one signature covers both."""
    from common.signing import model_digest

    data = json.loads(profile_json)
    return model_digest(arrays_numpy(arrays), data["model"], data["data"])


T = TypeVar("T", str, int, float)


def _get(config: Mapping[str, object], key: str, kind: type[T], default: T | None = None) -> T:
    """`config[key]` as `kind`, or ProtocolError naming the key (a missing key takes `default` if given)."""
    if key not in config:
        if default is not None:
            return default
        raise ProtocolError(f"the message lacks {key!r} (server and site run different clafed versions?)")
    value = config[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProtocolError(f"{key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class PhaseInstruction:
    """A train or validate message: which phase's network, under which profile, where in the schedule.

    `server_round` is the round within the current strategy run (Flower sets it); after a
    resume the phase's rounds continue from `round_offset`.
    """

    phase: str
    profile_json: str
    rounds: int
    round_offset: int = 0
    seed: int = 0
    server_round: int = 1
    proximal_mu: float = 0.0
    # "fp16": the weights arrive in fp16 and the reply carries the update in fp16 (TRANSFERS)
    transfer: str = "fp32"
    # Score the received weights (the previous round's global network) on the site's validation
    # cases before training and return the figures with the training reply (VALIDATION_PREFIX):
    # one message exchange a round instead of two.
    validate_received: bool = False

    def __post_init__(self) -> None:
        if self.transfer not in TRANSFERS:
            raise ProtocolError(f"'transfer' must be one of {', '.join(TRANSFERS)}, got {self.transfer[:20]!r}")

    @property
    def profile(self) -> Profile:
        return profile_from_json(self.profile_json)

    @property
    def round(self) -> int:
        """The round of the phase this message trains (1-based, counted over resumes)."""
        return self.round_offset + self.server_round

    def config(self) -> ConfigRecord:
        """The config the server hands to Flower's strategy (which adds server-round, proximal-mu)."""
        return ConfigRecord({"phase": self.phase, "profile": self.profile_json, "rounds": self.rounds,
                             "round-offset": self.round_offset, "seed": self.seed, "transfer": self.transfer})

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> "PhaseInstruction":
        return cls(phase=_get(config, "phase", str), profile_json=_get(config, "profile", str),
                   rounds=_get(config, "rounds", int), round_offset=_get(config, "round-offset", int),
                   seed=_get(config, "seed", int), server_round=_get(config, SERVER_ROUND, int),
                   proximal_mu=_get(config, PROXIMAL_MU, float, 0.0),
                   transfer=_get(config, "transfer", str, "fp32"),
                   validate_received=_get(config, VALIDATE_RECEIVED, bool, False) is True)


@dataclass(frozen=True)
class EvaluationInstruction:
    """The final-evaluation message: the run's name (a folder at the site), the profile that builds
    the CLA-HDM, the coordinator's signature over weights + profile, and the bootstrap settings."""

    profile_json: str
    run: str
    bootstrap: int
    seed: int
    signature: bytes | None = None

    @property
    def profile(self) -> Profile:
        return profile_from_json(self.profile_json)

    def config(self) -> ConfigRecord:
        return config_record({"profile": self.profile_json, "run": self.run, "bootstrap": self.bootstrap,
                              "seed": self.seed, "signature": self.signature})

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> "EvaluationInstruction":
        signature = config.get("signature")
        if signature is not None and not isinstance(signature, bytes):
            raise ProtocolError(f"'signature' must be bytes, got {type(signature).__name__}")
        return cls(profile_json=_get(config, "profile", str), run=_get(config, "run", str),
                   bootstrap=_get(config, "bootstrap", int), seed=_get(config, "seed", int), signature=signature)


@dataclass(frozen=True)
class SiteDescription:
    """A site's answer to site_info: its name, role, held-out cohort and case counts, nothing more."""

    name: str
    role: str
    cohort: str
    counts: dict[str, int] = field(default_factory=dict)

    def content(self) -> RecordDict:
        info = config_record({"name": self.name, "role": self.role, "cohort": self.cohort})
        return RecordDict({SITE: info, METRICS: metric_record(self.counts)})

    @classmethod
    def from_content(cls, content: RecordDict) -> "SiteDescription":
        """Read a site's self-description; anything that cannot be believed is a ProtocolError
        (its name becomes a file name at the coordinator)."""
        from common.names import name_problem

        info, metrics = content.get(SITE), content.get(METRICS)
        if not isinstance(info, ConfigRecord) or not isinstance(metrics, MetricRecord):
            raise ProtocolError("its site_info reply lacks the site block or the counts")
        name, role, cohort = (_get(info, key, str) for key in ("name", "role", "cohort"))
        problem = name_problem(name)
        if problem:
            raise ProtocolError(f"site name refused: {problem}")
        if role not in ("train", "evaluate"):
            raise ProtocolError(f"unknown role {role[:40]!r}")
        counts = {str(k): v for k, v in metrics.items() if isinstance(v, int) and not isinstance(v, bool)}
        if len(counts) != len(metrics) or not all(0 <= v < 10 ** 7 for v in counts.values()):
            raise ProtocolError("case counts that are not whole numbers between 0 and 10^7")
        return cls(name, role, cohort[:200], counts)
