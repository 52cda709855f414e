"""A site's data as every part of clafed sees it: validated cases split into training and held-out."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from common import site_cache
from common.config import ConfigError, DataConfig, SiteConfig, load_site_config
from common.dataset import CaseDataset, Prepared
from common.holdout import split_holdout, split_validation
from common.labels import LEVELS, LOCALISER, SHARED, Level
from common.localiser import CACHE_SCALE as LOCALISER_CACHE_SCALE
from common.localiser import LocaliserDataset
from common.manifest import NODE_MASK_COLUMN, Case
from common.validation import load_cases

log = logging.getLogger("clafed.site")


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
    # This version's folder of the site's disk cache (common/site_cache.py), where the images
    # decoded by one process wait for the next; None: images are decoded in every process.
    cache: Path | None = None
    # Decoded and cropped images per preprocessing config, shared by all of this site's datasets.
    _images: dict = field(default_factory=dict, repr=False)
    # Node masks cropped like the images, per preprocessing config (the shared phase's mask target).
    _masks: dict = field(default_factory=dict, repr=False)
    # Localiser frames per input size.
    _frames: dict = field(default_factory=dict, repr=False)
    # Disk-backed image caches: file -> (entries by case id, how many the file holds, encoder).
    _on_disk: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, config: SiteConfig, check_images: bool = True) -> "SiteData":
        """Validate the site's manifest and split it by the site's hold-out rule (without reading
        any image when `check_images` is False: the preflight counts unreadable ones itself)."""
        cases = load_cases(config.manifest, min_size=config.min_image_size, max_pixels=config.max_image_pixels,
                           check_images=check_images)
        train, held = split_holdout(cases, config.holdout)
        if config.role == "evaluate":  # evaluate-only sites never train: everything is held out
            train, held = [], train + held
        train, validation = split_validation(train, config.validation_fraction, config.holdout.seed)
        return cls(config, train, held, validation)

    def train_dataset(self, level: Level | None, cfg: DataConfig, seed: int = 0, masks: bool = False) -> CaseDataset:
        """Augmented training cases of one sub-model's classes (None: every class, 4-class targets),
        with their node masks when `masks` (see CaseDataset)."""
        dataset = self._memo(("train", level.key if level else SHARED, cfg, masks),
                             lambda: CaseDataset(self.train_cases, cfg, level=level, train=True, seed=seed,
                                                 cache=self._image_cache(cfg), masks=masks,
                                                 mask_cache=self._mask_cache(cfg) if masks else None))
        dataset.seed = seed  # new augmentation draws per round; the decoded images stay cached
        return dataset

    def localiser_dataset(self, cfg: DataConfig, seed: int = 0) -> LocaliserDataset:
        """The training cases that have an ROI, as whole B-mode frames for the node localiser."""
        # Memoised, so its frames are decoded once per process (and once per run with a disk cache).
        dataset = self._memo(("localiser", cfg.localiser_size),
                             lambda: LocaliserDataset(self.train_cases, cfg.localiser_size, train=True, seed=seed,
                                                      cache=self._frame_cache(cfg.localiser_size)))
        dataset.seed = seed
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
        out[train_count(LOCALISER)] = sum(c.roi is not None for c in self.train_cases)
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

    def prepare(self, dataset: CaseDataset | LocaliserDataset) -> None:
        """Decode every image `dataset` reads now, not while it trains (those a previous process
        left in the disk cache are read from there), and store the new ones for the next."""
        dataset.prepare_all()
        self.store_cache()

    def store_cache(self) -> None:
        """Write the disk-backed image caches that gained entries (no-op without a disk cache)."""
        for path, (entries, stored, encode) in list(self._on_disk.items()):
            if len(entries) > stored:
                try:
                    site_cache.save_images(path, {case_id: encode(e) for case_id, e in entries.items()})
                except OSError as err:  # a full disk costs the next process time, never this round
                    log.warning("could not write the image cache %s (%s)", path, err)
                    continue
                self._on_disk[path] = (entries, len(entries), encode)

    def _image_cache(self, cfg: DataConfig) -> dict:
        if cfg not in self._images:
            settings = ("prepared", cfg.input_size, cfg.roi_margin, cfg.augment.box_jitter)
            self._images[cfg] = self._disk_backed(settings, _prepared_from_pairs, lambda entry: entry)
        return self._images[cfg]

    def _mask_cache(self, cfg: DataConfig) -> dict:
        if cfg not in self._masks:
            settings = ("masks", cfg.input_size, cfg.roi_margin, cfg.augment.box_jitter)
            # A case without a mask is stored as no pair, so it is not looked for again.
            self._masks[cfg] = self._disk_backed(settings, lambda pairs: _prepared_from_pairs(pairs)[0] if pairs else None,
                                                 lambda entry: () if entry is None else (entry,))
        return self._masks[cfg]

    def _frame_cache(self, size: int) -> dict:
        if size not in self._frames:
            self._frames[size] = self._disk_backed(("localiser", size, LOCALISER_CACHE_SCALE),
                                                   lambda pairs: pairs[0], lambda entry: (entry,))
        return self._frames[size]

    def _disk_backed(self, settings: tuple, decode, encode) -> dict:
        if self.cache is None:
            return {}
        path = self.cache / f"{settings[0]}-{site_cache.settings_key(*settings)}.npz"
        entries = {case_id: decode(pairs) for case_id, pairs in site_cache.load_images(path).items()}
        self._on_disk[path] = (entries, len(entries), encode)
        return entries

    def _memo(self, key, build):
        if key not in self._datasets:
            self._datasets[key] = build()
        return self._datasets[key]


def _prepared_from_pairs(pairs) -> tuple[Prepared, ...]:
    return tuple(Prepared(image, (int(box[0]), int(box[1]), int(box[2]), int(box[3]))) for image, box in pairs)


# site YAML path -> (fingerprint of its files, the loaded site)
_LOADED: dict[str, tuple[tuple, SiteData]] = {}


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def files_fingerprint(yaml_path: Path, config: SiteConfig) -> tuple:
    """What a loaded site depends on: its YAML, its manifest and every image the manifest lists
    (modification time and size; stat calls only, no image is read)."""
    from common.manifest import ManifestError, read_table

    stamps: list = [_stamp(yaml_path), _stamp(config.manifest)]
    try:
        table = read_table(config.manifest)
    except ManifestError:
        return tuple(stamps)  # loading reports it
    root = config.manifest.parent
    columns = [c for c in ("bus_path", "cdfi_path", NODE_MASK_COLUMN) if c in table.columns]
    stamps += [_stamp(root / rel) if rel else None for column in columns for rel in table[column]]
    return tuple(stamps)


def load_site(path: str | Path) -> SiteData:
    """Load a site from its YAML once per process, again whenever the YAML, the manifest or an
    image it lists changed.

    A Flower client handles every round in the same process: re-validating hundreds of images
    per message would dominate a round on a small machine.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"site config not found: {path} (check the SuperNode's node_config site-config)")
    config = load_site_config(path)
    fingerprint = files_fingerprint(path, config)
    cached = _LOADED.get(str(path))
    if cached is None or cached[0] != fingerprint:
        _LOADED[str(path)] = (fingerprint, _load_with_disk_cache(config, fingerprint[1:]))
    return _LOADED[str(path)][1]


def _load_with_disk_cache(config: SiteConfig, files: tuple) -> SiteData:
    """Load the site, decoding every image to validate it only if this version of its files
    (`files`: the manifest's and its images' stamps) has not passed under the same limits before."""
    try:
        folder = site_cache.version_dir(config.output_dir, files)
    except OSError as err:
        log.warning("%s: no disk cache in %s (%s); every process decodes the images again",
                    config.name, config.output_dir, err)
        return SiteData.load(config)
    limits = site_cache.settings_key("validated", clafed_version(), config.min_image_size, config.max_image_pixels)
    validated = site_cache.is_validated(folder, limits)
    site = SiteData.load(config, check_images=not validated)
    if not validated:
        site_cache.mark_validated(folder, limits)
    site.cache = folder
    return site


def clafed_version() -> str:
    """The installed clafed's version: a new release validates and decodes again."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clafed")
    except PackageNotFoundError:
        return "unknown"
