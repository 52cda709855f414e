"""Flower's strategies, aimed at the sites that hold cases for the sub-model being trained.

Aggregation stays Flower's (FedAvg, FedProx, FedAdam, and the robust FedMedian, FedTrimmedAvg and
Krum from `flwr.serverapp.strategy`); we choose the nodes of a round, refuse replies that fail
server.reply_checks, bound each update's norm relative to the others, and hand every round's
replies to the server's recorder.
"""
from __future__ import annotations

import re
import time
from typing import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedMedian, FedProx, FedTrimmedAvg, Krum

from common import messages as msg
from common.messages import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, SERVER_ROUND, TRAIN, VALIDATE
from server import reply_checks
from server.privacy import GaussianDP
from server.records import RoundReport
from server.settings import Settings


def short_reason(reason: str) -> str:
    """The site's own error message without the transport's traceback around it."""
    text = reason.split("Message:", 1)[-1] if "Message:" in reason else reason
    text = re.sub(r"^\s*<class '[\w.]+'>:<'", "", text)  # Flower's "<class 'X'>:<'message'>"
    text = text.strip()
    text = text[:-2] if text.endswith("'>") else text  # Ray wraps the message as <'...'>
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else reason


class TargetedRounds:
    """Mixin for a Flower strategy: train only on `targets`, report every round to `on_round`.

    Flower's own configure_train still runs (FedAdam remembers the current weights there,
    FedProx adds its proximal-mu), but the node sample is replaced by the sites that have this
    sub-model's cases and are still connected.
    """

    targets: list[int]
    on_round: Callable[[RoundReport], None]
    # node id -> the training cases of this phase the site declared when it joined: a reply
    # must report exactly that many.
    declared: dict[int, int]
    # Updates larger, per training case, than this multiple of the round's median are scaled
    # down to it (0: off).
    clip_factor: float = 0.0
    # Differential privacy of the published average (server/privacy.py); None: off.
    dp: GaussianDP | None = None
    # How weights travel (common.messages.TRANSFERS): with fp16 the sites get fp16 weights and
    # reply with fp16 updates, which are added to the fp32 weights sent before anything else.
    transfer: str = "fp32"
    # Sites holding validation cases of this phase, and who receives their replies (round,
    # node id -> aggregate figures, node id -> failure).
    validators: list[int]
    on_validation: Callable[[int, dict[int, dict], dict[int, str]], None] | None = None
    # Rounds of this phase completed before a resume (restore_state).
    rounds_before: int = 0
    # Rounds of this strategy run: rounds before the last are validated by the next round's training
    # replies (PhaseInstruction.validate_received); only the last one gets validate messages.
    last_round: int = 1
    _started: float
    _dtypes: dict[str, np.dtype]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._started = time.time()
        if server_round == 1:  # the network's own dtypes, before any average has changed them
            self._dtypes = {key: array.numpy().dtype for key, array in arrays.items()}
        self._sent = arrays
        sampled = list(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]
        if not sampled:
            return []
        content = sampled[0].content
        content[CONFIG] = ConfigRecord(dict(content[CONFIG], **{
            msg.VALIDATE_RECEIVED: server_round > 1 and self.on_validation is not None}))
        if self.transfer == "fp16":
            content[ARRAYS] = msg.half_arrays(arrays)
        self._bytes_down = msg.arrays_nbytes(content[ARRAYS])
        online = set(grid.get_node_ids())
        self._targeted = [node for node in self.targets if node in online]
        return [Message(content=content, dst_node_id=node, message_type=TRAIN) for node in self._targeted]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        failures = {r.metadata.src_node_id: short_reason(r.error.reason) for r in replies if r.has_error()}
        ok, bytes_up, validation = [], {}, {}
        for reply in (r for r in replies if not r.has_error()):
            node = reply.metadata.src_node_id
            figures, validation[node] = msg.split_validation(reply.content[METRICS]) \
                if isinstance(reply.content.get(METRICS), MetricRecord) else ({}, {})
            if validation[node]:
                reply.content[METRICS] = MetricRecord(figures)
            problem = reply_checks.train_reply_problem(reply.content, self._sent, self.declared.get(node, 0),
                                                       self.transfer)
            if problem:
                failures[node] = f"reply refused: {problem}"
                continue
            bytes_up[node] = msg.arrays_nbytes(reply.content[ARRAYS])
            if self.transfer == "fp16":  # from here on every check and average sees fp32 weights
                reply.content[ARRAYS] = msg.applied_update(reply.content[ARRAYS], self._sent)
            ok.append(reply)
        figures = {r.metadata.src_node_id: dict(r.content[METRICS]) for r in ok}
        # A site that had nothing to train on this round must not zero the weighted average.
        useful = [r for r in ok if int(r.content[METRICS][NUM_EXAMPLES]) > 0]
        norms = {r.metadata.src_node_id: reply_checks.update_norm(r.content[ARRAYS], self._sent) for r in useful}
        scales = self._clip(useful, norms)
        for reply in useful:  # Flower's strategy sees the checked weights and the averaged figures only
            reply.content[METRICS] = reply_checks.aggregated_metrics(reply.content[METRICS])
        # A resumed stateful strategy counts its rounds on from where it stopped (FedAdam's bias correction).
        arrays, metrics = (super().aggregate_train(server_round + self.rounds_before, useful)  # type: ignore[misc]
                           if useful else (None, None))
        noise_std = 0.0
        if self.dp is not None and arrays is not None:
            counts = [float(r.content[METRICS][NUM_EXAMPLES]) for r in useful]
            weights = [c / sum(counts) for c in counts]
            noise_std = self.dp.noise_std(weights)
            arrays = self.dp.noised(arrays, weights, np.random.default_rng())  # unseeded: noise must not be guessable
        if arrays is not None:
            arrays = msg.cast_like(arrays, self._dtypes)
        if server_round > 1 and self.on_validation is not None:  # the previous round's global network
            self.on_validation(server_round - 1, {n: v for n, v in validation.items() if n in self.validators and v}, {})
        report = RoundReport(
            server_round=server_round, arrays=arrays, metrics=metrics, replies=figures,
            failures=failures, targeted=list(self._targeted), started=self._started, finished=time.time(),
            clipped=scales, update_norms=norms, dp_noise_std=noise_std, bytes_down=self._bytes_down,
            bytes_up=bytes_up, server_state=self.server_state())
        self.on_round(report)
        return arrays, metrics

    def server_state(self) -> dict[str, np.ndarray]:
        """What the strategy carries from round to round besides the weights (none for FedAvg):
        saved with each round, so a resumed run goes on with it (restore_state)."""
        return {}

    def restore_state(self, state: dict[str, np.ndarray], rounds_before: int) -> None:
        """Continue after `rounds_before` completed rounds with the `state` saved after the last one."""
        self.rounds_before = rounds_before

    def _clip(self, replies: list[Message], norms: dict[int, float]) -> dict[int, float]:
        """Scale down, in place, the updates far larger (per case) than the round's median, then clip
        every update to the DP clip norm when DP is on."""
        counts = {r.metadata.src_node_id: float(r.content[METRICS][NUM_EXAMPLES]) for r in replies}
        scales = reply_checks.clip_scales(norms, counts, self.clip_factor)
        for reply in replies:
            if reply.metadata.src_node_id in scales:
                scale = scales[reply.metadata.src_node_id]
                reply.content[ARRAYS] = reply_checks.clipped(reply.content[ARRAYS], self._sent, scale)
            if self.dp is not None:
                reply.content[ARRAYS] = self.dp.clip(reply.content[ARRAYS], self._sent)
        return scales

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Send the last round's global network to the sites that hold validation cases of this phase."""
        if self.on_validation is None or server_round != self.last_round:
            return []  # earlier rounds are validated by the next round's training replies
        online = set(grid.get_node_ids())
        config = ConfigRecord(dict(config, **{SERVER_ROUND: server_round}))
        content = RecordDict({ARRAYS: msg.half_arrays(arrays) if self.transfer == "fp16" else arrays, CONFIG: config})
        return [Message(content=content, dst_node_id=node, message_type=VALIDATE)
                for node in self.validators if node in online]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Hand the sites' validation figures (aggregate counts) to the server's recorder."""
        if self.on_validation is None or server_round != self.last_round:
            return None
        replies = list(replies)
        figures = {r.metadata.src_node_id: dict(r.content[METRICS]) for r in replies if not r.has_error()}
        failures = {r.metadata.src_node_id: short_reason(r.error.reason) for r in replies if r.has_error()}
        self.on_validation(server_round, figures, failures)
        return None


class TargetedFedAvg(TargetedRounds, FedAvg):
    pass


class TargetedFedProx(TargetedRounds, FedProx):
    pass


class TargetedFedAdam(TargetedRounds, FedAdam):
    """FedAdam whose first and second moments survive a restart of the coordinator."""

    MOMENTS = ("m_t", "v_t")

    def server_state(self) -> dict[str, np.ndarray]:
        return {f"{name}/{key}": value for name in self.MOMENTS
                for key, value in (getattr(self, name) or {}).items()}

    def restore_state(self, state: dict[str, np.ndarray], rounds_before: int) -> None:
        super().restore_state(state, rounds_before)
        for name in self.MOMENTS:
            moments = {key.split("/", 1)[1]: np.asarray(value) for key, value in state.items()
                       if key.startswith(f"{name}/")}
            setattr(self, name, moments or None)


class TargetedFedMedian(TargetedRounds, FedMedian):
    pass


class TargetedFedTrimmedAvg(TargetedRounds, FedTrimmedAvg):
    pass


class TargetedKrum(TargetedRounds, Krum):
    pass


def make_strategy(settings: Settings, targets: list[int], on_round: Callable[[RoundReport], None],
                  validators: list[int] = (),
                  on_validation: Callable[[int, dict[int, dict], dict[int, str]], None] | None = None,
                  declared: dict[int, int] | None = None) -> FedAvg:
    """The configured Flower strategy, restricted to `targets` (node ids) and, for the evaluate
    round, to `validators`; `declared` holds each target's case count from its site_info."""
    # fraction_train ~ 0 and min_train_nodes=1: Flower's sampler then only waits for one
    # connected node; which nodes train and validate is decided by TargetedRounds.
    common = dict(fraction_train=1e-9, fraction_evaluate=1e-9, min_train_nodes=1, min_evaluate_nodes=0,
                  min_available_nodes=1, weighted_by_key=NUM_EXAMPLES, arrayrecord_key=ARRAYS,
                  configrecord_key=CONFIG)
    if settings.strategy == "fedavg":
        strategy: FedAvg = TargetedFedAvg(**common)
    elif settings.strategy == "fedprox":
        strategy = TargetedFedProx(proximal_mu=settings.proximal_mu, **common)
    elif settings.strategy == "fedadam":
        strategy = TargetedFedAdam(eta=settings.server_lr, **common)
    elif settings.strategy == "fedmedian":
        strategy = TargetedFedMedian(**common)
    elif settings.strategy == "fedtrimmedavg":
        strategy = TargetedFedTrimmedAvg(beta=settings.trim_beta, **common)
    else:
        strategy = TargetedKrum(num_malicious_nodes=settings.krum_malicious, **common)
    strategy.targets = list(targets)
    strategy.declared = dict(declared or {})
    strategy.clip_factor = settings.clip_factor
    strategy.transfer = settings.transfer
    strategy.dp = GaussianDP(settings.dp_noise, settings.dp_clip) if settings.dp_noise > 0 else None
    strategy.on_round = on_round
    strategy.validators = list(validators)
    strategy.on_validation = on_validation if validators else None
    return strategy

