"""The coordinator's run: find the sites, federate each sub-model in turn, then evaluate everywhere.

A run federates phases one after another. First, when the profile asks for it, a shared phase
trains one network with 4-class heads on every labelled case: each extractor then learns from all
cases instead of the third a sub-model sees, and its weights initialise the three sub-models.
Then the sub-models are federated in turn, as the paper trained them independently: each phase
is one Flower strategy run over that network's weights only, weighted by that phase's local case
counts, among the sites that have such cases.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from common import calibration as cal
from common import messages as msg
from common.config import Profile
from common.errors import ClafedError, ProtocolError
from common.labels import CLASSES, LEVEL_BY_KEY, LOCALISER, SHARED
from common.localiser import NodeLocaliser
from common.model import CLAHDM, SubModel
from common.training import seed_everything, train_phases
from server.recorder import RunRecorder
from server.records import RoundReport, SiteInfo
from server.reply_checks import evaluation_reply_problem
from server.settings import Settings
from server.strategy import make_strategy, short_reason

log = logging.getLogger("clafed.server")


class FederationError(ClafedError, RuntimeError):
    """The run cannot go on (too few sites, a failed round); the last completed round is kept."""


def wait_for_sites(grid: Grid, settings: Settings) -> list[int]:
    """Wait until `min_sites` SuperNodes are connected, or fail with what is missing."""
    deadline = time.time() + settings.connect_timeout
    while len(nodes := list(grid.get_node_ids())) < settings.min_sites:
        if time.time() > deadline:
            raise FederationError(
                f"only {len(nodes)} of the required {settings.min_sites} sites connected within "
                f"{settings.connect_timeout:.0f} s: check that each hospital's SuperNode is running and can "
                f"reach the SuperLink (or lower min_sites)")
        time.sleep(1.0)
    return nodes


def site_from_reply(node: int, content: RecordDict) -> tuple[SiteInfo | None, str | None]:
    """A site's self-description, or why it cannot be believed (its name becomes a file name)."""
    try:
        site = msg.SiteDescription.from_content(content)
    except ProtocolError as err:
        return None, str(err)
    return SiteInfo(node, site.name, site.role, site.cohort, site.counts), None


def discover_sites(grid: Grid, settings: Settings) -> tuple[list[SiteInfo], list[str]]:
    """Ask every connected node who it is: the usable sites, and a line for each node that failed."""
    nodes = wait_for_sites(grid, settings)
    queries = [Message(RecordDict(), dst_node_id=node, message_type=msg.SITE_INFO) for node in nodes]
    replies = list(grid.send_and_receive(queries, timeout=settings.connect_timeout))
    sites, problems = [], []
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            problems.append(f"node {node}: {short_reason(reply.error.reason)}")
            continue
        site, problem = site_from_reply(node, reply.content)
        if problem:
            problems.append(f"node {node}: {problem}")
        else:
            sites.append(site)
    answered = {r.metadata.src_node_id for r in replies}
    problems += [f"node {node}: no answer within {settings.connect_timeout:.0f} s" for node in nodes if node not in answered]
    for problem in problems:
        log.error("site failed to start: %s", problem)
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise FederationError(f"two sites use the same name ({', '.join(sorted(names))}): give each site YAML its own name")
    if len(sites) < settings.min_sites:
        raise FederationError(f"{len(sites)} usable sites, {settings.min_sites} required; "
                              + ("; ".join(problems) or "no site answered"))
    return sorted(sites, key=lambda s: s.name), problems


def preflight(grid: Grid, settings: Settings, sites: list[SiteInfo], recorder: RunRecorder) -> dict[str, dict]:
    """Ask every site for its data-quality figures before round 1 (aggregate only, refused when
    malformed); warn about, or with stop_on_missing_class stop for, a training site without any
    case of a class it is meant to train (every class)."""
    from common.preflight_figures import preflight_keys_problem
    from server.preflight_summary import missing_classes

    queries = [Message(RecordDict(), dst_node_id=s.node_id, message_type=msg.PREFLIGHT) for s in sites]
    replies = {r.metadata.src_node_id: r for r in grid.send_and_receive(queries, timeout=settings.connect_timeout)}
    figures: dict[str, dict] = {}
    for site in sites:
        reply = replies.get(site.node_id)
        if reply is None or reply.has_error():
            reason = short_reason(reply.error.reason) if reply is not None else "no reply"
            log.error("preflight of %s failed: %s", site.name, reason)
            continue
        values = dict(reply.content.get(msg.METRICS) or {})
        problem = preflight_keys_problem(values)
        if problem:
            log.error("preflight of %s refused: %s", site.name, problem)
            continue
        figures[site.name] = {k: float(v) for k, v in values.items()}
    recorder.preflight_received(figures)
    missing = missing_classes(figures, {s.name: list(CLASSES) for s in sites if s.role == "train"})
    for name, classes in missing.items():
        line = f"training site {name} has no training case of {', '.join(classes)}"
        if settings.stop_on_missing_class:
            raise FederationError(f"preflight: {line}; add such cases or give the site role: evaluate "
                                  "(or run without stop_on_missing_class)")
        log.warning("preflight: %s", line)
    return figures


def train_phase(grid: Grid, settings: Settings, profile: Profile, phase: str, network: SubModel | NodeLocaliser,
                model: CLAHDM, sites: list[SiteInfo], recorder: RunRecorder) -> None:
    """Federate one phase's network for the rounds it still lacks; `network` is updated in place.

    `network` is one of `model`'s sub-models, the shared network of the first phase, or the
    model's localiser (skipped, with a warning, when no site has an ROI to train it on).
    """
    rounds = profile.train.phase_rounds(phase)
    done = recorder.completed(phase)
    if done >= rounds:
        log.info("%s: all %d rounds already done", phase, rounds)
        return
    trainers = [s for s in sites if s.trains(phase)]
    if not trainers and phase == LOCALISER:
        log.warning("%s: no training site has cases with an ROI to learn from; the model gets no localiser, "
                    "so its cases will need an ROI", phase)
        return
    if not trainers:
        raise FederationError(f"no training site has cases for {phase}: it cannot be trained; "
                              "check the sites' roles and hold-out rules")
    needed = min(settings.min_train_sites, len(trainers))
    trainers_ids = [s.node_id for s in trainers]
    names = {s.node_id: s.name for s in sites}

    def on_round(report: RoundReport) -> None:
        useful = {n: m for n, m in report.replies.items() if int(m[msg.NUM_EXAMPLES]) > 0}
        for node, reason in report.failures.items():
            log.error("%s round %d: site %s failed: %s", phase, done + report.server_round, names.get(node, node),
                      reason)
        for node, scale in report.clipped.items():
            log.warning("%s round %d: the update of %s was %.0f x the round's median: scaled by %.3f",
                        phase, done + report.server_round, names.get(node, node), settings.clip_factor / scale, scale)
        missing = [names.get(n, str(n)) for n in trainers_ids if n not in report.replies and n not in report.failures]
        if missing:
            log.error("%s round %d: no reply from %s within %.0f s", phase, done + report.server_round,
                      ", ".join(missing), settings.round_timeout)
        report.silent = missing
        if len(useful) < needed or report.arrays is None:
            raise FederationError(
                f"{phase} round {done + report.server_round}: {len(useful)} site(s) contributed, {needed} required "
                f"(failed: {', '.join(names.get(n, str(n)) for n in report.failures) or 'none'}; "
                f"silent: {', '.join(missing) or 'none'}). Rounds up to {done + report.server_round - 1} are saved: "
                "restart the missing sites and run again with resume=true")
        network.load_state_dict(msg.arrays_to_state(report.arrays, network.state_dict()))
        recorder.round_completed(phase, done + report.server_round, model, report, names,
                                 shared=network if phase == SHARED else None)

    def on_validation(server_round: int, figures: dict[int, dict], failures: dict[int, str]) -> None:
        for node, reason in failures.items():
            log.error("%s round %d: validation failed at %s: %s", phase, done + server_round, names.get(node, node), reason)
        recorder.validation_completed(phase, done + server_round, network.n_classes,
                                      {names.get(n, str(n)): f for n, f in figures.items()},
                                      network=network if isinstance(network, SubModel) else None)

    validators = [s.node_id for s in sites if s.role == "train" and s.counts.get(msg.validation_count(phase), 0) > 0]
    declared = {s.node_id: s.counts[msg.train_count(phase)] for s in trainers}
    strategy = make_strategy(settings, trainers_ids, on_round, validators, on_validation, declared)
    saved = recorder.strategy_state(phase)
    if saved:
        log.info("%s: %s goes on with its state after round %d", phase, settings.strategy, done)
    strategy.restore_state(saved, done)  # type: ignore[attr-defined]
    strategy.last_round = rounds - done  # type: ignore[attr-defined]
    config = msg.PhaseInstruction(phase=phase, profile_json=msg.profile_to_json(profile), rounds=rounds,
                                  round_offset=done, seed=settings.seed, transfer=settings.transfer).config()
    log.info("%s: federating rounds %d..%d over %s", phase, done + 1, rounds,
             ", ".join(f"{s.name} ({s.counts[msg.train_count(phase)]} cases)" for s in trainers))
    strategy.start(grid, initial_arrays=msg.state_to_arrays(network.state_dict()),
                   num_rounds=rounds - done, timeout=settings.round_timeout, train_config=config,
                   evaluate_config=config)


def train_all(grid: Grid, settings: Settings, profile: Profile, model: CLAHDM, sites: list[SiteInfo],
              recorder: RunRecorder) -> None:
    """Every phase in order (common.training.train_phases); a resumed run keeps trained sub-models."""
    train_phases(model, profile.train.shared_rounds, lambda: recorder.shared_network(profile),
                 lambda phase, network: train_phase(grid, settings, profile, phase, network, model, sites, recorder),
                 untrained=lambda key: recorder.completed(key) == 0, localiser_rounds=profile.train.localiser_rounds)


def final_evaluation(grid: Grid, settings: Settings, profile: Profile, model: CLAHDM,
                     sites: list[SiteInfo], recorder: RunRecorder) -> dict[str, dict]:
    """Send the assembled CLA-HDM to every site; keep the aggregate figures each one returns."""
    arrays = msg.state_to_arrays(model.state_dict())
    instruction = recorder.final_model(model, profile, arrays, settings)
    content = RecordDict({msg.ARRAYS: arrays, msg.CONFIG: instruction.config()})
    queries = [Message(content, dst_node_id=s.node_id, message_type=msg.FINAL_EVAL) for s in sites]
    log.info("final evaluation: sending CLA-HDM (%.1f MB) to %s", msg.arrays_nbytes(arrays) / 1e6,
             ", ".join(s.name for s in sites))
    replies = {r.metadata.src_node_id: r for r in grid.send_and_receive(queries, timeout=settings.eval_timeout)}
    results = {}
    for site in sites:
        reply = replies.get(site.node_id)
        if reply is None:
            log.error("final evaluation: no reply from %s within %.0f s", site.name, settings.eval_timeout)
            recorder.evaluation_failed(site.name, f"no reply within {settings.eval_timeout:.0f} s")
        elif reply.has_error():
            log.error("final evaluation failed at %s: %s", site.name, short_reason(reply.error.reason))
            recorder.evaluation_failed(site.name, short_reason(reply.error.reason))
        else:
            figures = dict(reply.content.get(msg.METRICS) or {})
            problem = evaluation_reply_problem(figures)
            if problem:
                log.error("final evaluation: the reply of %s is refused: %s", site.name, problem)
                recorder.evaluation_failed(site.name, f"reply refused: {problem}")
            else:
                results[site.name] = recorder.evaluation_received(site.name, site.role, site.cohort, figures)
    return results


def with_thresholds(profile: Profile, model: CLAHDM, recorder: RunRecorder, which: str = "final",
                    temperature_scaling: bool = False) -> Profile:
    """Set the decision thresholds (and, with `temperature_scaling`, the temperatures) chosen on the
    validation counts of the rounds `model` holds ("final": the last ones, "best": the best ones),
    in the model and in the profile that travels (signed) with it, so every site decides exactly
    as the coordinator's model.pt does.

    A temperature changes the probabilities, not the calls: each threshold moves with its level's
    temperature (common.calibration.threshold_at).
    """
    thresholds, _ = recorder.decision_thresholds(profile.model.decision_thresholds, which)
    temperatures = recorder.temperatures(which) if temperature_scaling else (1.0, 1.0, 1.0)
    gate, benign, malignant = (cal.threshold_at(t, temp) for t, temp in zip(thresholds, temperatures))
    model.threshold, model.subtype_thresholds, model.temperatures = gate, (benign, malignant), temperatures
    return replace(profile, model=replace(profile.model, threshold=gate, subtype_thresholds=(benign, malignant),
                                          temperatures=temperatures))


def candidate_models(settings: Settings, profile: Profile, model: CLAHDM, recorder: RunRecorder
                     ) -> tuple[str, dict[str, tuple[CLAHDM, Profile]]]:
    """The final model (every sub-model at its last round) and, when federated validation picked
    other rounds, the best one; each with its own thresholds and temperatures. Returns which one
    the sites evaluate (settings.evaluate_model, or the final one when there is no other) and both.

    Both are recorded in run.json; neither choice looks at a test cohort.
    """
    candidates = {"final": (model, with_thresholds(profile, model, recorder, "final", settings.temperature_scaling))}
    best = recorder.best_model(model)
    if best is not None:
        candidates["best"] = (best, with_thresholds(profile, best, recorder, "best", settings.temperature_scaling))
    evaluated = settings.evaluate_model if settings.evaluate_model in candidates else "final"
    best_rounds = recorder.best_rounds()
    if settings.evaluate_model == "best" and best is None:
        log.info("the sites evaluate the final model (%s)", "every sub-model's best round is its last"
                 if best_rounds else "no validation cases to choose a best round")
    last_is_best = bool(best_rounds) and all(r == recorder.completed(key) for key, r in best_rounds.items())
    chosen = {}
    for which, (_, used) in candidates.items():
        thresholds, how = recorder.decision_thresholds(profile.model.decision_thresholds, which)
        rounds = {key: (best_rounds.get(key, recorder.completed(key)) if which == "best" else recorder.completed(key))
                  for key in LEVEL_BY_KEY}
        chosen[which] = {"rounds": rounds, "thresholds_chosen_by": how,
                         "decision_thresholds": dict(zip(LEVEL_BY_KEY, used.model.decision_thresholds)),
                         "thresholds_before_temperature": dict(zip(LEVEL_BY_KEY, thresholds)),
                         "temperatures": dict(zip(LEVEL_BY_KEY, used.model.temperatures)),
                         # the final model is also the best one when validation picked every last round
                         "best_by_validation": which == "best" or last_is_best}
    recorder.models_chosen(chosen, evaluated)
    for which, (candidate, used) in candidates.items():
        if which != evaluated:
            path = recorder.save_alternative(which, candidate, used)
            log.info("the %s model (not evaluated at the sites) is saved as %s", which, path)
    return evaluated, candidates


def warn_unboxed(sites: list[SiteInfo], profile: Profile) -> None:
    """Say so when training cases without an ROI will be read whole because no localiser is trained."""
    unboxed = {s.name: s.counts.get(msg.TRAIN_TOTAL, 0) - s.counts.get(msg.train_count(LOCALISER), 0) for s in sites}
    unboxed = {name: n for name, n in unboxed.items() if n > 0}
    if unboxed and profile.train.localiser_rounds == 0:
        log.warning("training cases without an ROI (%s) are read whole and this run trains no localiser to find "
                    "their node: set localiser-rounds (clafed simulate --localiser-rounds N)",
                    ", ".join(f"{name}: {n}" for name, n in sorted(unboxed.items())))


def run_federation(grid: Grid, settings: Settings) -> RunRecorder:
    """The whole run; returns the recorder whose folder holds every record of it."""
    profile = settings.build_profile()
    recorder = RunRecorder.open(settings)
    sites, problems = discover_sites(grid, settings)
    recorder.started(sites, profile, problems)
    preflight(grid, settings, sites, recorder)
    warn_unboxed(sites, profile)
    seed_everything(settings.seed)
    model = recorder.initial_model(profile)
    train_all(grid, settings, profile, model, sites, recorder)
    recorder.privacy_spent()
    evaluated, candidates = candidate_models(settings, profile, model, recorder)
    chosen, chosen_profile = candidates[evaluated]
    final_evaluation(grid, settings, chosen_profile, chosen, sites, recorder)
    recorder.finished()
    return recorder

