"""A site's data-quality preflight, before any training: who is in which cohort, what the images are.

`site_preflight` looks at every case of a site (the training cohort, i.e. train + validation,
and the held-out cohort) and reads image headers and bytes only, never pixels:

- case counts per class, per scanner and per exam year, for each cohort;
- image size ranges of the B-mode (BUS) and Doppler (CDFI) images, and the B-mode pixel spacing
  when the manifest has the `mm_per_px_x` / `mm_per_px_y` columns `clafed ingest` writes;
- cases without an ROI;
- exact duplicate images (identical bytes, sha256) across every case and both modalities;
- missing or unreadable images, counted instead of stopping the preflight.

The `Preflight` keeps the full detail, case ids and paths included: it stays at the site
(`write_local_report`). `shareable_preflight` is what the site may send to the coordinator:
flat aggregate figures under the site's small-number rules (client/disclosure.py), and
`common.preflight_figures.preflight_keys_problem` is how the coordinator refuses a reply that is
not of that shape.

Key scheme of the shareable figures (<cohort> is `train` or `heldout`):

    pre.<cohort>.n                         cases in the cohort (always sent)
    pre.<cohort>.class.<class>             cases per class, all four classes, zeros kept
    pre.<cohort>.year.<yyyy>               cases per exam year (years of either cohort, zeros kept)
    pre.<cohort>.scanner.<k>               cases per scanner, k = its index in the sorted scanner names
    pre.<cohort>.scanner.unknown           cases without a scanner name
    pre.<cohort>.scanner_count             named scanners with cases in the cohort
    pre.<cohort>.suppressed                counts of this cohort left out (0 < n < min_cell)
    pre.<bus|cdfi>.<width|height>.<min|median|max>   image sizes in pixels, every case of the site
    pre.bus.spacing_<x|y>.<min|median|max>           B-mode mm per pixel, when the manifest has it
    pre.no_roi                             cases without an ROI (every case of the site)
    pre.suppressed                         site-wide counts left out (0 < n < min_cell)
    pre.duplicates                         groups of images with identical bytes
    pre.duplicates_cross_cohort            of those, groups spanning the training and held-out cohorts
    pre.unreadable                         image files missing or unreadable

Years and scanner names are those of the cohorts that send detail. A cohort below `min_cohort`
sends `pre.<cohort>.n` only, and its years and scanners do not appear among the other cohort's
keys, not even as zeros; when the whole site is below it, the site-wide size, spacing and no-ROI
figures are left out too. Duplicate and unreadable counts are counts of files to fix, not of
patients, and are always sent.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import statistics
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from common.labels import CLASSES
from common.manifest import Case
from common.preflight_figures import (  # noqa: F401 -- preflight_keys_problem: the check of what this sends
    COHORT_TITLES,
    COHORTS,
    CROSS_COHORT_DUPLICATES,
    DUPLICATES,
    MODALITIES,
    NO_ROI,
    PREFIX,
    SITE_SUPPRESSED,
    SPACING_COLUMNS,
    STATS,
    UNKNOWN_SCANNER,
    UNREADABLE,
    cohort_key,
    preflight_keys_problem,
)

if TYPE_CHECKING:
    from common.config import SiteConfig
    from common.site import SiteData

@dataclass
class CohortCounts:
    """How many cases of one cohort fall in each class, scanner ('unknown' for none) and exam year."""

    n: int
    classes: dict[str, int]
    scanners: dict[str, int]
    years: dict[int, int]


@dataclass
class Range:
    """Smallest, median and largest of some values, and how many there were."""

    n: int
    min: float
    median: float
    max: float


@dataclass
class ImageIssue:
    """An image the preflight could not read (it stays at the site: it names the case and the file)."""

    case_id: str
    modality: str
    path: str
    reason: str


@dataclass
class ImageRef:
    """One use of an image file by a case."""

    case_id: str
    modality: str
    path: str
    cohort: str


@dataclass
class DuplicateGroup:
    """Image uses whose files have identical bytes (the same file used twice, or copies of it)."""

    sha256: str
    members: list[ImageRef]

    @property
    def cohorts(self) -> list[str]:
        """The cohorts the group's cases belong to, in COHORTS order."""
        return [c for c in COHORTS if any(m.cohort == c for m in self.members)]


@dataclass
class Preflight:
    """A site's full preflight; case ids and paths included, so it never leaves the site."""

    site: str
    role: str
    heldout_rule: str
    min_cohort: int
    min_cell: int
    train: CohortCounts
    heldout: CohortCounts
    # modality -> "width" / "height" -> range over the readable images (absent: none readable)
    sizes: dict[str, dict[str, Range]]
    # "x" / "y" -> range of the B-mode mm per pixel (empty: the manifest has no spacing)
    spacing: dict[str, Range]
    no_roi: list[str]
    duplicates: list[DuplicateGroup]
    unreadable: list[ImageIssue]
    # Classes without a training case at a training site, in CLASSES order.
    missing_classes: list[str] = field(default_factory=list)

    @property
    def n_cases(self) -> int:
        return self.train.n + self.heldout.n

    def cohort(self, name: str) -> CohortCounts:
        return {"train": self.train, "heldout": self.heldout}[name]

    def problems(self) -> list[str]:
        """What should be fixed before training (an empty list: nothing)."""
        out = []
        if self.duplicates:
            cross = sum(len(g.cohorts) > 1 for g in self.duplicates)
            out.append(f"{len(self.duplicates)} group(s) of identical images"
                       + (f", {cross} of them across the training and held-out cohorts" if cross else ""))
        if self.unreadable:
            out.append(f"{len(self.unreadable)} image(s) missing or unreadable")
        if self.missing_classes:
            out.append(f"no training case of {', '.join(self.missing_classes)}")
        return out

    def to_dict(self) -> dict:
        """The preflight as JSON-ready data (year keys become strings)."""
        data = asdict(self)
        for name in COHORTS:
            data[name]["years"] = {str(y): n for y, n in data[name]["years"].items()}
        for group, raw in zip(self.duplicates, data["duplicates"]):
            raw["cohorts"] = group.cohorts
        data["n_cases"] = self.n_cases
        data["problems"] = self.problems()
        return data


def _cohort_counts(cases: list[Case]) -> CohortCounts:
    labels = Counter(c.label for c in cases)
    scanners = Counter(c.scanner or UNKNOWN_SCANNER for c in cases)
    years = Counter(c.date.year for c in cases)
    return CohortCounts(len(cases), {name: labels.get(name, 0) for name in CLASSES},
                        dict(sorted(scanners.items())), dict(sorted(years.items())))


def _range(values: list[float]) -> Range:
    return Range(len(values), min(values), statistics.median(values), max(values))


def _inspect(path: Path, max_pixels: int) -> tuple[tuple[int, int] | None, str, str | None]:
    """(width, height), why it is unreadable ('' when readable) and the sha256 of the file's bytes,
    from one read: the header and structure are checked without decoding pixels."""
    from PIL import Image

    try:
        data = path.read_bytes()
    except OSError:
        return None, "missing file" if not path.exists() else "unreadable file", None
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # lazy: the header only
                size = image.size
                image.verify()  # PNG: chunk structure and checksums, no decompression
    except Image.DecompressionBombError:
        return None, "too large for Pillow to open (a decompression bomb?)", digest
    except Exception as err:  # noqa: BLE001 -- any failure of a broken file is counted, not raised
        detail = str(err).replace(str(path), path.name)  # the path is listed beside the reason
        return None, f"unreadable image ({type(err).__name__}: {detail})", digest
    if size[0] * size[1] > max_pixels:
        return None, f"{size[0]}x{size[1]} px, more than the site's max_image_pixels ({max_pixels:,})", digest
    return size, "", digest


def _spacing(case: Case, axis: str) -> float | None:
    raw = case.extras.get(SPACING_COLUMNS[axis], "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def site_preflight(site: SiteData) -> Preflight:
    """The preflight of every case of `site` (training, validation and held-out)."""
    config = site.config
    cohorts = {"train": site.train_cases + site.validation_cases, "heldout": site.heldout_cases}
    refs = [ImageRef(case.case_id, modality, str(getattr(case, f"{modality}_path")), cohort)
            for cohort, cases in cohorts.items() for case in cases for modality in MODALITIES]
    inspected: dict[str, tuple[tuple[int, int] | None, str, str | None]] = {}
    sizes: dict[str, list[tuple[int, int]]] = defaultdict(list)
    unreadable, by_hash = [], defaultdict(list)
    for ref in refs:  # a file used twice is read once
        if ref.path not in inspected:
            inspected[ref.path] = _inspect(Path(ref.path), config.max_image_pixels)
        size, reason, digest = inspected[ref.path]
        if size is None:
            unreadable.append(ImageIssue(ref.case_id, ref.modality, ref.path, reason))
        else:
            sizes[ref.modality].append(size)
        if digest is not None:
            by_hash[digest].append(ref)
    duplicates = [DuplicateGroup(digest, members) for digest, members in sorted(by_hash.items()) if len(members) > 1]
    every_case = cohorts["train"] + cohorts["heldout"]
    spacing = {}
    for axis in SPACING_COLUMNS:
        values = [v for v in (_spacing(c, axis) for c in every_case) if v is not None]
        if values:
            spacing[axis] = _range(values)
    train = _cohort_counts(cohorts["train"])
    missing = [name for name in CLASSES if train.classes[name] == 0] if config.role == "train" else []
    return Preflight(
        site=config.name, role=config.role, heldout_rule=site.cohort(),
        min_cohort=config.min_cohort, min_cell=config.min_cell,
        train=train, heldout=_cohort_counts(cohorts["heldout"]),
        sizes={m: {"width": _range([w for w, _ in sizes[m]]), "height": _range([h for _, h in sizes[m]])}
               for m in MODALITIES if sizes[m]},
        spacing=spacing,
        no_roi=sorted(c.case_id for c in every_case if c.roi is None),
        duplicates=duplicates, unreadable=unreadable, missing_classes=missing,
    )


def load_site_unchecked(config: SiteConfig) -> SiteData:
    """The site's cases split as for training, without reading any image: the manifest's fields
    are checked (a ManifestError when they are wrong), its images are the preflight's to count,
    so one unreadable file does not hide the rest of the picture."""
    from common.site import SiteData

    return SiteData.load(config, check_images=False)


# --- the local report --------------------------------------------------------------------------

def _fmt(value: float) -> str:
    return f"{value:g}"


def range_text(r: Range) -> str:
    return f"{_fmt(r.min)}-{_fmt(r.max)} (median {_fmt(r.median)})"


def summary_lines(preflight: Preflight) -> list[str]:
    """A readable summary with case ids (for the site's own eyes: the terminal, preflight.md)."""
    p = preflight
    lines = [f"site {p.site} ({p.role}); held-out: {p.heldout_rule}"]
    for name in COHORTS:
        counts = p.cohort(name)
        classes = ", ".join(f"{c} {counts.classes[c]}" for c in CLASSES)
        lines.append(f"{COHORT_TITLES[name]}: {counts.n} case(s): {classes}")
    scanners = sorted(set(p.train.scanners) | set(p.heldout.scanners))
    lines.append("scanners (training / held-out): " + ("; ".join(
        f"{s} {p.train.scanners.get(s, 0)}/{p.heldout.scanners.get(s, 0)}" for s in scanners) or "none"))
    years = sorted(set(p.train.years) | set(p.heldout.years))
    lines.append("exam years (training / held-out): " + ("; ".join(
        f"{y} {p.train.years.get(y, 0)}/{p.heldout.years.get(y, 0)}" for y in years) or "none"))
    for modality in MODALITIES:
        size = p.sizes.get(modality)
        lines.append(f"{modality.upper()} size (px): " + (
            f"width {range_text(size['width'])}, height {range_text(size['height'])}" if size else "no readable image"))
    if p.spacing:
        lines.append("BUS pixel spacing (mm/px): " + ", ".join(
            f"{axis} {range_text(r)} ({r.n} case(s))" for axis, r in p.spacing.items()))
    lines.append(f"cases without ROI: {len(p.no_roi)}" + (f" ({', '.join(p.no_roi[:10])}"
                                                          f"{', ...' if len(p.no_roi) > 10 else ''})" if p.no_roi else ""))
    lines.append(f"duplicate images: {len(p.duplicates)} group(s)")
    for group in p.duplicates:
        cross = " [training AND held-out]" if len(group.cohorts) > 1 else ""
        members = "; ".join(f"case {m.case_id} {m.modality} {m.path}" for m in group.members)
        lines.append(f"  sha256 {group.sha256[:12]}{cross}: {members}")
    lines.append(f"unreadable images: {len(p.unreadable)}")
    lines += [f"  case {i.case_id} {i.modality}: {i.reason}: {i.path}" for i in p.unreadable]
    problems = p.problems()
    lines.append("problems: " + ("; ".join(problems) if problems else "none"))
    return lines


def report_data(preflight: Preflight) -> dict:
    """What preflight.json holds: the full detail, and the figures the site would send."""
    data = preflight.to_dict()
    data["shareable"] = shareable_preflight(preflight, min_cohort=preflight.min_cohort, min_cell=preflight.min_cell)
    return data


def write_local_report(preflight: Preflight, out_dir: str | Path) -> Path:
    """Write `preflight.json` and `preflight.md` into `out_dir` (the site's own folder); returns
    the JSON's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "preflight.json"
    path.write_text(json.dumps(report_data(preflight), indent=2) + "\n")
    text = "\n".join(["# Preflight of site " + preflight.site, "",
                      "Local report: it names cases and files, and never leaves the site.", "",
                      *(f"- {line}" if not line.startswith("  ") else f"    - {line.strip()}"
                        for line in summary_lines(preflight))])
    (out_dir / "preflight.md").write_text(text + "\n")
    return path


# --- what leaves the site ----------------------------------------------------------------------

def _add_counts(out: dict[str, float], counts: Mapping[str, int], min_cell: int) -> int:
    """Add counts to `out`, leaving out those below min_cell (zeros kept); returns how many were left out."""
    left_out = 0
    for key, n in counts.items():
        if 0 < n < min_cell:
            left_out += 1
        else:
            out[key] = int(n)
    return left_out


def shareable_preflight(preflight: Preflight, *, min_cohort: int, min_cell: int) -> dict[str, float]:
    """The preflight's aggregate figures the coordinator may see (key scheme: the module's docstring).

    No case id, no path, no scanner name: scanner names are free text typed at the site (a
    room, a serial number, a person's name may be in them), so scanners are sent as an index in
    the sorted list of names. One list for both cohorts, so the same index is the same
    scanner in the training and the held-out cohort and the coordinator can see a shift of
    scanners between them, which the bare number of scanners would not show.
    """
    p = preflight
    out: dict[str, float] = {}
    # Years and scanner indices over the cohorts that send detail only: a zero for a scanner or
    # year of a withheld cohort would tell the coordinator something about its few cases.
    shown = [p.cohort(name) for name in COHORTS if p.cohort(name).n >= min_cohort]
    named = sorted({s for counts in shown for s in counts.scanners} - {UNKNOWN_SCANNER})
    years = sorted({y for counts in shown for y in counts.years})
    has_unknown = any(UNKNOWN_SCANNER in counts.scanners for counts in shown)
    for name in COHORTS:
        counts = p.cohort(name)
        out[cohort_key(name, "n")] = counts.n
        if counts.n < min_cohort:
            continue
        cells = {cohort_key(name, f"class.{c}"): counts.classes[c] for c in CLASSES}
        cells |= {cohort_key(name, f"year.{y:04d}"): counts.years.get(y, 0) for y in years}
        cells |= {cohort_key(name, f"scanner.{k}"): counts.scanners.get(s, 0) for k, s in enumerate(named)}
        if has_unknown:
            cells[cohort_key(name, f"scanner.{UNKNOWN_SCANNER}")] = counts.scanners.get(UNKNOWN_SCANNER, 0)
        suppressed = _add_counts(out, cells, min_cell)
        out[cohort_key(name, "scanner_count")] = sum(1 for s in named if counts.scanners.get(s, 0) > 0)
        out[cohort_key(name, "suppressed")] = suppressed
    if p.n_cases >= min_cohort:
        for modality, dims in p.sizes.items():
            for dim, r in dims.items():
                out |= {f"{PREFIX}{modality}.{dim}.{stat}": _number(getattr(r, stat)) for stat in STATS}
        for axis, r in p.spacing.items():
            out |= {f"{PREFIX}bus.spacing_{axis}.{stat}": float(getattr(r, stat)) for stat in STATS}
        out[SITE_SUPPRESSED] = _add_counts(out, {NO_ROI: len(p.no_roi)}, min_cell)
    out[DUPLICATES] = len(p.duplicates)
    out[CROSS_COHORT_DUPLICATES] = sum(len(g.cohorts) > 1 for g in p.duplicates)
    out[UNREADABLE] = len(p.unreadable)
    return out


def _number(value: float) -> float:
    """An int when the value is whole (pixel sizes; a median of two may end in .5)."""
    return int(value) if float(value).is_integer() else float(value)
