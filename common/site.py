"""A site's data as every part of clafed sees it: validated cases split into training and held-out."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.config import ConfigError, DataConfig, SiteConfig, load_site_config
from common.dataset import CaseDataset
from common.holdout import split_holdout, split_validation
from common.labels import LEVELS, SHARED, Level
from common.manifest import Case, load_cases


@dataclass
class SiteData:
    """One site's cases. Datasets are memoised so decoded images are reused across rounds.

    Labelled cases (unlabeled ones never train nor score) fall in three disjoint parts: training,
    validation (a stratified share of the pre-hold-out cases that scores each round's global
    model) and the held-out cohort.
    """

    config: SiteConfig
    train_cases: list[Case]
    heldout_cases: list[Case]
    validation_cases: list[Case] = field(default_factory=list)
    _datasets: dict = field(default_factory=dict, repr=False)
    # Decoded and cropped images per preprocessing config, shared by all of this site's datasets.
    _images: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, config: SiteConfig) -> "SiteData":
        """Validate the site's manifest and split it by the site's hold-out rule."""
        train, held = split_holdout(load_cases(config.manifest, max_pixels=config.max_image_pixels), config.holdout)
        if config.role == "evaluate":  # evaluate-only sites never train: everything is held out
            train, held = [], train + held
        train, validation = split_validation(train, config.validation_fraction, config.holdout.seed)
        return cls(config, train, held, validation)

    def train_dataset(self, level: Level | None, cfg: DataConfig, seed: int = 0) -> CaseDataset:
        """Augmented training cases of one sub-model's classes (None: every class, 4-class targets)."""
        dataset = self._memo(("train", level.key if level else SHARED, cfg),
                             lambda: CaseDataset(self.train_cases, cfg, level=level, train=True, seed=seed,
                                                 cache=self._image_cache(cfg)))
        dataset.seed = seed  # new augmentation draws per round; the decoded images stay cached
        return dataset

    def validation_dataset(self, level: Level | None, cfg: DataConfig) -> CaseDataset:
        """Validation cases of one sub-model's classes (None: every class), without augmentation."""
        return self._memo(("validation", level.key if level else SHARED, cfg),
                          lambda: CaseDataset(self.validation_cases, cfg, level=level, cache=self._image_cache(cfg)))

    def heldout_dataset(self, cfg: DataConfig, level: Level | None = None) -> CaseDataset:
        """Held-out cases without augmentation (4-class targets unless a level is given)."""
        key = ("heldout", level.key if level else None, cfg)
        return self._memo(key, lambda: CaseDataset(self.heldout_cases, cfg, level=level,
                                                   cache=self._image_cache(cfg)))

    def counts(self) -> dict[str, int]:
        """Aggregate case counts (the only description of its data a site shares)."""
        from common.messages import HELDOUT_TOTAL, TRAIN_TOTAL, train_count, validation_count

        out = {train_count(lv.key): sum(c.label in lv.labels for c in self.train_cases) for lv in LEVELS}
        out[train_count(SHARED)] = len(self.train_cases)  # split_holdout keeps labelled cases only
        out.update({validation_count(lv.key): sum(c.label in lv.labels for c in self.validation_cases)
                    for lv in LEVELS})
        out[validation_count(SHARED)] = len(self.validation_cases)
        out[TRAIN_TOTAL] = len(self.train_cases)
        out[HELDOUT_TOTAL] = len(self.heldout_cases)
        return out

    def cohort(self) -> str:
        """A one-line description of the held-out cohort, for reports."""
        rule = self.config.holdout
        if self.config.role == "evaluate" or rule.kind == "all":
            what = "every labelled case (external cohort)"
        elif rule.kind == "date":
            what = f"cases examined on/after {rule.date}"
        elif rule.kind == "fraction":
            what = f"a stratified {rule.fraction:.0%} of cases (seed {rule.seed})"
        else:
            what = "no held-out cases"
        return f"{what}, n={len(self.heldout_cases)}"

    def _image_cache(self, cfg: DataConfig) -> dict:
        return self._images.setdefault(cfg, {})

    def _memo(self, key, build):
        if key not in self._datasets:
            self._datasets[key] = build()
        return self._datasets[key]


_LOADED: dict[tuple[str, float], SiteData] = {}


def load_site(path: str | Path) -> SiteData:
    """Load a site from its YAML once per process (keyed by path and modification time).

    A Flower client handles every round in the same process: re-validating hundreds of images
    per message would dominate a round on a small machine.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"site config not found: {path} (check the SuperNode's node_config site-config)")
    key = (str(path), path.stat().st_mtime)
    if key not in _LOADED:
        _LOADED[key] = SiteData.load(load_site_config(path))
    return _LOADED[key]
