"""Everything the server writes about a run, in the order that makes a crash harmless.

After each round: checkpoint (atomic), then the metrics and ledger lines, then state.json last.
state.json is the commit point: `resume` trusts only rounds it lists, and drops log lines of a
round that was being written when the server died.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import math
import statistics
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord

from common import federated_validation as fv
from common import messages as msg
from common.checkpoint import atomic_torch_save, load_checkpoint, save_checkpoint
from common.config import ConfigError, Profile
from common.labels import CLASSES, GATE_PHASE, LEVEL_BY_KEY, PHASES
from common.model import CLAHDM, SubModel, initial_model, initial_shared_network
from common.names import name_problem
from common.signing import sign_digest, weights_digest, write_signature
from common.typed_config import to_dict
from server import run_dir as rd
from server.privacy import epsilon
from server.records import RoundReport, SiteInfo
from server.settings import Settings, settings_json

log = logging.getLogger("clafed.server")
LEVEL_KEYS = tuple(LEVEL_BY_KEY)


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


class RunRecorder:
    """Writes one run directory (see server/run_dir.py for its layout)."""

    def __init__(self, path: Path, settings: Settings, state: dict) -> None:
        self.path, self.settings, self.state = path, settings, state

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def open(cls, settings: Settings) -> "RunRecorder":
        """A new run folder, or the existing one when resuming (refusing to mix two runs)."""
        path = settings.run_path().resolve()
        problem = name_problem(path.name)
        if problem:  # the name travels to every site, which makes a folder of it
            raise ConfigError(f"run folder {path}: {problem}")
        state = rd.read_json(path / rd.STATE_FILE)
        if settings.resume:
            if state is None:
                raise ConfigError(f"cannot resume: {path} holds no {rd.STATE_FILE} (no round was completed there)")
            recorder = cls(path, settings, state)
            recorder._drop_uncommitted()
            log.info("resuming %s after rounds %s", path, state["completed"])
            return recorder
        if state is not None:
            raise ConfigError(f"{path} already holds a run: resume it (resume=true / --resume) or choose another run dir")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, settings, {"completed": {phase: 0 for phase in PHASES}})

    def completed(self, phase: str) -> int:
        """Rounds of a phase (`shared` or a sub-model's key) committed so far."""
        return int(self.state["completed"].get(phase, 0))

    def started(self, sites: list[SiteInfo], profile: Profile, site_failures: list[str] = ()) -> None:
        """Record who takes part; a resumed run must have the same sites and settings as before."""
        previous = rd.read_json(self.path / rd.RUN_FILE, {})
        profile_config = json.loads(json.dumps(to_dict(profile)))
        if previous and previous.get("profile_config") != profile_config:
            raise ConfigError(f"cannot resume {self.path}: it was trained with another profile/overrides "
                              f"({previous.get('profile')}); pass the same settings as the first attempt")
        site_roles = sorted([s.name, s.role] for s in sites)
        if previous and sorted([s["name"], s["role"]] for s in previous.get("sites", [])) != site_roles:
            raise ConfigError(f"cannot resume {self.path}: it was started with the sites "
                              f"{', '.join(s['name'] for s in previous.get('sites', []))}, now "
                              f"{', '.join(name for name, _ in site_roles)} answered; start the same sites")
        changed = rd.changed_settings(previous.get("settings", {}), json.loads(settings_json(self.settings)))
        if previous and changed:
            raise ConfigError(f"cannot resume {self.path}: settings differ from the first attempt "
                              f"({', '.join(changed)}); pass the same settings")
        info = dict(previous)
        info.update({
            "settings": json.loads(settings_json(self.settings)), "profile": profile.name, "profile_config": profile_config,
            "rounds": profile.train.rounds, "shared_rounds": profile.train.shared_rounds,
            "local_epochs": profile.train.epochs,
            "strategy": self.settings.strategy, "mode": info.get("mode", "federated"),
            "protocol": info.get("protocol", "federated"),
            "sites": [{"name": s.name, "role": s.role, "cohort": s.cohort, "counts": s.counts} for s in sites],
            "started": info.get("started") or now(), "finished": None,
            # Nodes that could not take part (they failed to load or describe their site).
            "site_failures": list(site_failures),
            "resumed": info.get("resumed", []) + ([now()] if self.settings.resume else []),
        })
        rd.write_json(self.path / rd.RUN_FILE, info)

    def preflight_received(self, figures: dict[str, dict]) -> None:
        """Keep the sites' preflight figures (aggregate, checked) for the report and the model card."""
        rd.write_json(self.path / rd.PREFLIGHT_FILE, {"time": now(), "sites": figures})

    def initial_model(self, profile: Profile) -> CLAHDM:
        """The model to start from: the last checkpoint when resuming, else a fresh one."""
        checkpoint = self.path / rd.CHECKPOINT_FILE
        if self.settings.resume and checkpoint.is_file():
            return load_checkpoint(checkpoint).model
        return initial_model(profile.model)

    def shared_network(self, profile: Profile) -> SubModel:
        """The shared phase's 4-class network: its checkpoint when resuming, else a fresh one."""
        network = initial_shared_network(profile)
        checkpoint = self.path / rd.SHARED_CHECKPOINT_FILE
        if self.settings.resume and checkpoint.is_file():
            network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        return network

    def round_completed(self, phase: str, server_round: int, model: CLAHDM, report: RoundReport,
                        names: dict[int, str], shared: SubModel | None = None) -> None:
        """Persist a completed round (the model, or `shared` in the shared phase, holds its aggregate).

        A shared round writes only the shared network: the CLA-HDM does not change before its
        sub-models train (and a resumed run initialises them from the shared checkpoint again).
        """
        if shared is not None:
            atomic_torch_save({k: v.detach().cpu() for k, v in shared.state_dict().items()},
                              self.path / rd.SHARED_CHECKPOINT_FILE)
        else:
            save_checkpoint(self.path / rd.CHECKPOINT_FILE, model, self.settings.build_profile().data,
                            {"run": self.name, "level": phase, "round": server_round})
        if report.server_state:
            atomic_torch_save({"phase": phase, "round": server_round,
                               "state": {k: torch.from_numpy(np.array(v, order="C"))
                                         for k, v in report.server_state.items()}},
                              self.path / rd.STRATEGY_STATE_FILE)
        sites = {names.get(n, str(n)): m for n, m in report.replies.items()}
        examples = {name: int(m[msg.NUM_EXAMPLES]) for name, m in sites.items()}
        # A site's local compute: its training and (PhaseInstruction.validate_received) its validation.
        seconds = {name: float(m.get("train_seconds", 0.0)) + float(m.get("validation_seconds", 0.0))
                   for name, m in sites.items()}
        compute = max(seconds.values(), default=0.0)
        round_seconds = report.finished - report.started
        record = {
            "level": phase, "round": server_round, "time": now(),
            "num_examples": sum(examples.values()),
            # Flower's strategy averaged these, weighted by each site's cases.
            "loss": float(report.metrics["loss"]) if report.metrics else math.nan,
            "accuracy": float(report.metrics["accuracy"]) if report.metrics else math.nan,
            "sites": {name: {k: float(v) for k, v in m.items()} for name, m in sites.items()},
            "failed_sites": {names.get(n, str(n)): reason for n, reason in report.failures.items()},
            # Sites whose update was scaled down to the clipping bound, with the factor.
            "clipped_sites": {names.get(n, str(n)): scale for n, scale in report.clipped.items()},
            "silent_sites": list(report.silent),
            "update_norms": {names.get(n, str(n)): norm for n, norm in report.update_norms.items()},
            "dp_noise_std": report.dp_noise_std,
            # Local compute: the slowest site (sites train in parallel) and the sum over sites.
            "round_seconds": round_seconds, "compute_seconds": compute, "finished_at": report.finished,
            "compute_seconds_total": sum(seconds.values()),
            "overhead_seconds": max(0.0, round_seconds - compute),
            # As the sites see it: sent = their replies (the mean), received = the weights sent out.
            "bytes_sent_per_site": statistics.fmean(report.bytes_up.values()) if report.bytes_up else 0.0,
            "bytes_received_per_site": report.bytes_down,
        }
        rd.append_jsonl(self.path / rd.METRICS_FILE, record)
        digest = weights_digest(msg.arrays_numpy(report.arrays), {})
        rd.append_jsonl(self.path / rd.LEDGER_FILE, {
            "level": phase, "round": server_round, "sha256": digest, "sites": examples, "time": record["time"]})
        self.state["completed"][phase] = server_round
        rd.write_json(self.path / rd.STATE_FILE, self.state)
        log.info("%s round %d: loss %.4f, accuracy %.3f over %d cases from %s (%.1f s, %.1f s of it local compute)",
                 phase, server_round, record["loss"], record["accuracy"], record["num_examples"],
                 ", ".join(sorted(examples)), round_seconds, compute)

    def strategy_state(self, phase: str) -> dict[str, np.ndarray]:
        """The strategy's state saved after `phase`'s last completed round (empty: none, or it
        belongs to another round, as when the server died between writing it and state.json)."""
        path = self.path / rd.STRATEGY_STATE_FILE
        done = self.completed(phase)
        if not self.settings.resume or done == 0 or not path.is_file():
            return {}
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("phase") != phase or saved.get("round") != done:
            log.warning("%s: the saved %s state is of %s round %s, not of round %d: it starts afresh", phase,
                        self.settings.strategy, saved.get("phase"), saved.get("round"), done)
            return {}
        return {k: v.numpy() for k, v in saved["state"].items()}

    def validation_completed(self, phase: str, server_round: int, n_classes: int, figures: dict[str, dict],
                             network: SubModel | None = None) -> None:
        """Record a round's pooled validation (aggregate figures only); keep a sub-model's counts for
        its decision threshold and temperature, and `network` when this round is its best so far.

        A reply that does not add up (see `fv.reply_problem`) is logged and left out of the pool.
        """
        usable = {}
        gate = phase == GATE_PHASE
        for name, reply in figures.items():
            problem = fv.reply_problem(reply, n_classes, gate)
            if problem:
                log.error("%s round %d: validation reply of %s left out: %s", phase, server_round, name, problem)
            else:
                usable[name] = reply
        figures = usable
        total = fv.pooled(list(figures.values()))
        record = {"level": phase, "round": server_round, "time": now(), **fv.summary(total, n_classes),
                  "sites": {name: int(f.get(fv.COUNT_KEY, 0)) for name, f in figures.items()}}
        rd.append_jsonl(self.path / rd.VALIDATION_FILE, record)
        if phase in LEVEL_KEYS and total.get(fv.COUNT_KEY, 0) > 0:
            # The pooled counts of each level's last validated round (the final model's thresholds).
            self.state.setdefault("validation_totals", {})[phase] = total
            previous = self.state.get("best", {}).get(phase)
            improved = network is not None and self._improves(phase, record)
            if improved:
                atomic_torch_save({k: v.detach().cpu() for k, v in network.state_dict().items()},
                                  self.path / rd.best_checkpoint(phase, server_round))
                self.state.setdefault("best", {})[phase] = {
                    "round": server_round, "totals": total,
                    **{k: record[k] for k in ("auc", "loss", "loss_calibrated") if k in record}}
            rd.write_json(self.path / rd.STATE_FILE, self.state)
            if improved and previous is not None and previous["round"] != server_round:
                (self.path / rd.best_checkpoint(phase, previous["round"])).unlink(missing_ok=True)
        log.info("%s round %d validation: %s", phase, server_round,
                 ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k in ("loss", "accuracy", "auc")) or "no cases")

    def _improves(self, phase: str, record: dict) -> bool:
        """Whether a validated round beats the phase's best so far. Only validation counts decide,
        never a test cohort.

        The criterion is the pooled validation NLL at the round's best temperature: it scores the
        probabilities of every case, not only their order, and does not punish a round for an
        over- or under-confidence the fitted temperature removes. On a few dozen validation cases
        the binned AUC moves by ties and single cases (seen: a first round of sub-model 3 picked
        for an AUC 0.007 above a far better trained one). Records without it (counts from before
        temperature scaling) compare AUCs, ties broken by the lower loss.
        """
        best = self.state.get("best", {}).get(phase)
        if best is None:
            return True
        if "loss_calibrated" in record and "loss_calibrated" in best:
            return float(record["loss_calibrated"]) < float(best["loss_calibrated"]) - 1e-12
        auc, best_auc = float(record["auc"]), float(best["auc"])
        if math.isnan(auc) != math.isnan(best_auc):
            return math.isnan(best_auc)
        if math.isnan(auc) or math.isclose(auc, best_auc, abs_tol=1e-9):
            return float(record["loss"]) < float(best["loss"])
        return auc > best_auc

    def validation_totals(self, which: str = "final") -> dict[str, dict]:
        """Each level's pooled validation counts of the round its `which` model holds: the last
        validated round ("final") or the best one ("best")."""
        if which == "best":
            return {key: best["totals"] for key, best in self.state.get("best", {}).items()}
        return dict(self.state.get("validation_totals", {}))

    def best_rounds(self) -> dict[str, int]:
        """Each validated sub-model's best round."""
        return {key: int(best["round"]) for key, best in self.state.get("best", {}).items()}

    def best_model(self, final: CLAHDM) -> CLAHDM | None:
        """A copy of `final` whose sub-models are those of their best validated rounds; None when
        no sub-model was validated or every best round is its last (the two models are the same)."""
        best = self.best_rounds()
        if not best or all(r == self.completed(key) for key, r in best.items()):
            return None
        files = {key: self.path / rd.best_checkpoint(key, server_round) for key, server_round in best.items()}
        lost = [str(path) for path in files.values() if not path.is_file()]
        if lost:  # the final model is complete: a lost file costs the choice, not the run
            log.error("the best rounds' weights are gone (%s): only the final model can be evaluated", ", ".join(lost))
            return None
        model = copy.deepcopy(final)
        for key, path in files.items():
            model.submodel(key).load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model

    def decision_thresholds(self, defaults: tuple[float, float, float], which: str = "final"
                            ) -> tuple[tuple[float, float, float], str]:
        """The gate's (sub-model 1) and the two subtype thresholds of the gated answer, from the
        pooled validation counts of the rounds the `which` model holds, and how they were chosen.

        By the run's `thresholds` rule: `fixed` keeps `defaults` (the trained 0.5); `joint`
        chooses them together for the gated answer's balanced accuracy (`fv.gated_thresholds`)
        when all three levels were validated; `youden` (and `joint` without the three levels) takes
        each level's own Youden's J, or its default without validation scores; `auto` is `joint`
        when every class has fv.MIN_CLASS_CASES pooled validation cases, else `fixed`.
        """
        totals = self.validation_totals(which)
        rule = self.settings.thresholds
        if rule == "auto":
            counts = fv.label_counts(totals.get(GATE_PHASE, {}))
            few = [f"{CLASSES[i]} {n}" for i, n in enumerate(counts) if n < fv.MIN_CLASS_CASES]
            if few:
                return defaults, (f"kept at the trained values: too few pooled validation cases to choose them on "
                                  f"({', '.join(few)}; {fv.MIN_CLASS_CASES} of each class needed)")
            rule = "joint"
        if rule == "fixed":
            return defaults, "kept at the trained values (thresholds=fixed)"
        joint = (fv.gated_thresholds(*(totals[key] for key in LEVEL_KEYS))
                 if rule == "joint" and all(key in totals for key in LEVEL_KEYS) else None)
        if joint is not None:
            return ((joint[0], joint[1], joint[2]),
                    "chosen by the balanced accuracy of the gated answer on pooled validation scores")
        values = []
        for key, default in zip(LEVEL_KEYS, defaults):
            if key in totals:
                values.append(fv.decision_threshold(totals[key]))
            else:
                log.warning("no validation scores for %s: its decision threshold stays %.2f", key, default)
                values.append(float(default))
        return (values[0], values[1], values[2]), "chosen by Youden's J of each level on pooled validation scores"

    def temperatures(self, which: str = "final") -> tuple[float, float, float]:
        """Each level's temperature with the least pooled validation NLL (1 without validation)."""
        totals = self.validation_totals(which)
        fitted = [fv.temperature(totals[key]) if key in totals else None for key in LEVEL_KEYS]
        values = [1.0 if t is None else t for t in fitted]
        return values[0], values[1], values[2]

    def models_chosen(self, chosen: dict[str, dict], evaluated: str) -> None:
        """Record in run.json each candidate model (its rounds, thresholds, temperatures) and which one
        the sites evaluate; the evaluated one's thresholds also as `decision_thresholds`."""
        info = chosen[evaluated]
        for which, entry in chosen.items():
            log.info("%s model: rounds %s, decision thresholds (%s) %s, temperatures %s", which,
                     entry["rounds"], entry["thresholds_chosen_by"],
                     ", ".join(f"{k} {v:.3f}" for k, v in entry["decision_thresholds"].items()),
                     ", ".join(f"{k} {v:.2f}" for k, v in entry["temperatures"].items()))
        rd.update_run_info(self.path, models=chosen, evaluated_model=evaluated,
                           decision_thresholds=info["decision_thresholds"],
                           thresholds_chosen_by=info["thresholds_chosen_by"], temperatures=info["temperatures"])

    def save_alternative(self, which: str, model: CLAHDM, profile: Profile) -> Path:
        """Save (and sign) the candidate model the sites do not evaluate, beside model.pt."""
        path = self.path / rd.ALTERNATIVE_MODEL_FILES[which]
        save_checkpoint(path, model, profile.data, {"run": self.name, "model": which})
        if self.settings.signing_key:
            arrays = msg.state_to_arrays(model.state_dict())
            write_signature(path, sign_digest(msg.sent_model_digest(arrays, msg.profile_to_json(profile)),
                                              Path(self.settings.signing_key)))
        return path

    def final_model(self, model: CLAHDM, profile: Profile, arrays: ArrayRecord,
                    settings: Settings) -> msg.EvaluationInstruction:
        """Save (and sign, when a key is configured) the assembled CLA-HDM; return what the sites get."""
        save_checkpoint(self.path / rd.MODEL_FILE, model, profile.data,
                        {"run": self.name, "rounds": profile.train.rounds,
                         "model": rd.read_json(self.path / rd.RUN_FILE, {}).get("evaluated_model", "final")})
        profile_json = msg.profile_to_json(profile)
        signature = None
        if settings.signing_key:
            # One signature: it travels with the message (checked by the sites) and sits next to
            # model.pt as model.sig (for `clafed evaluate` / `clafed predict`); both have this digest.
            signature = sign_digest(msg.sent_model_digest(arrays, profile_json), Path(settings.signing_key))
            write_signature(self.path / rd.MODEL_FILE, signature)
        else:
            log.warning("signing_key not set: the final model goes out unsigned; sites configured with a "
                        "coordinator_public_key will refuse it")
        return msg.EvaluationInstruction(profile_json=profile_json, run=self.name, bootstrap=settings.bootstrap,
                                         seed=settings.seed, signature=signature)

    def evaluation_received(self, site: str, role: str, cohort: str, figures: dict) -> dict:
        record = {"site": site, "role": role, "cohort": cohort, "n_cases": int(figures.get("n_cases", 0)),
                  "metrics": {k: float(v) for k, v in figures.items()}}
        rd.write_json(rd.evaluation_path(self.path, site), record)
        return record

    def evaluation_failed(self, site: str, reason: str) -> None:
        failures = rd.read_json(self.path / rd.FAILURES_FILE, {})
        failures[site] = reason
        rd.write_json(self.path / rd.FAILURES_FILE, failures)

    def privacy_spent(self) -> dict | None:
        """The (epsilon, delta) each site spent on the published weights (run.json `privacy`), when DP is on.

        A site spends one Gaussian release per round it contributed to; its noise multiplier is
        at least dp_noise (the noise is scaled to the largest site weight), so this is an upper bound.
        """
        if self.settings.dp_noise <= 0:
            return None
        releases: dict[str, int] = {}
        for record in rd.read_jsonl(self.path / rd.METRICS_FILE):
            if record.get("dp_noise_std", 0) > 0:
                for site in record["sites"]:
                    releases[site] = releases.get(site, 0) + 1
        spent = {site: epsilon(self.settings.dp_noise, n, self.settings.dp_delta) for site, n in releases.items()}
        privacy = {"mechanism": "Gaussian, site-level, fixed clipping (server/privacy.py)",
                   "noise_multiplier": self.settings.dp_noise, "clip_norm": self.settings.dp_clip,
                   "delta": self.settings.dp_delta, "releases": releases, "epsilon": spent,
                   "epsilon_max": max(spent.values(), default=0.0)}
        rd.update_run_info(self.path, privacy=privacy)
        log.info("differential privacy: epsilon %.3g at delta %g (noise multiplier %g, clip norm %g, "
                 "largest number of releases %d)", privacy["epsilon_max"], self.settings.dp_delta,
                 self.settings.dp_noise, self.settings.dp_clip, max(releases.values(), default=0))
        return privacy

    def finished(self) -> None:
        rd.update_run_info(self.path, finished=now())

    def _drop_uncommitted(self) -> None:
        """Remove log lines of rounds that state.json does not list (the server died mid-write)."""
        for name in (rd.METRICS_FILE, rd.LEDGER_FILE, rd.VALIDATION_FILE):
            records = rd.read_jsonl(self.path / name)
            kept = [r for r in records if r["round"] <= self.state["completed"].get(r["level"], 0)]
            if len(kept) != len(records):
                (self.path / name).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

