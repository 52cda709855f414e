"""The ingest itself: DICOM export + diagnosis CSV -> PNG pairs, `manifest.csv` and a report.

Written into the site folder:
- `images/<case_id>_bus.png`, `images/<case_id>_cdfi.png`: the chosen frames cropped to the
  imaging region, PNGs without metadata;
- `manifest.csv`: case_id (salted hash), image paths, label, exam_date, scanner, cohort, the ROI
  when the CSV gave one, pixel spacing (`mm_per_px_x`, `mm_per_px_y`) when the regions gave it;
- `ingest/report.json` (counts: files, cases, per class, encodings, frame rules, the privacy
  inventory) and `ingest/refused.csv` (one line per refused input file, and labels rows that
  matched no study). These name input files: they are the operator's log and stay at the site.
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from client.ingest.images import ImageOptions, ReadyImage, prepare_image
from client.ingest.labels import LabelRow, read_labels
from client.ingest.pairing import pair_study
from client.ingest.privacy import PrivacyInventory, verify_output
from client.ingest.pseudonyms import case_id, load_or_create_salt
from client.ingest.scan import Instance, scan
from common.errors import ClafedError
from common.manifest import REQUIRED_COLUMNS, ROI_COLUMNS

MANIFEST_COLUMNS = (*REQUIRED_COLUMNS, "scanner", "cohort", *ROI_COLUMNS, "mm_per_px_x", "mm_per_px_y")
SALT_FILE = ".ingest-salt"


class IngestError(ClafedError, ValueError):
    """The ingest cannot run or its output failed the privacy check; the message says what to do."""


@dataclass(frozen=True)
class IngestOptions:
    """Everything `clafed ingest` can be told."""

    image: ImageOptions = ImageOptions()
    pair_by: str = "order"
    salt_file: Path | None = None  # default: <site folder>/.ingest-salt
    force: bool = False


@dataclass
class IngestSummary:
    """What the ingest did (counts only, plus the refusal lines)."""

    manifest: Path
    cases: int = 0
    labels: Counter = field(default_factory=Counter)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (input file or labels row, reason)
    frame_rules: Counter = field(default_factory=Counter)
    encodings: Counter = field(default_factory=Counter)
    rescaled_files: int = 0
    privacy: dict = field(default_factory=dict)


def ingest(dicom_folder: Path, labels_csv: Path, out_dir: Path, options: IngestOptions = IngestOptions()) -> IngestSummary:
    """Turn a DICOM export into a site folder; raise IngestError when it cannot start or the privacy
    check of its own output fails (the manifest is then removed, so nothing half-checked is used)."""
    dicom_folder, out_dir = Path(dicom_folder), Path(out_dir)
    if not dicom_folder.is_dir():
        raise IngestError(f"{dicom_folder}: no such folder (give the folder of the DICOM export)")
    key, rows = read_labels(Path(labels_csv))
    manifest = out_dir / "manifest.csv"
    if manifest.exists() and not options.force:
        raise IngestError(f"{manifest} already exists; pass --force to replace what an earlier ingest wrote")
    salt = load_or_create_salt(options.salt_file or out_dir / SALT_FILE)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    if options.force:
        _remove_previous(manifest)
    inventory = PrivacyInventory()
    studies, refused = scan(dicom_folder, inventory)
    summary = IngestSummary(manifest, refused=refused)
    matched: set[tuple[str, int]] = set()
    records, written = [], []
    for uid in sorted(studies):
        for record, images in _study_cases(studies[uid], key, rows, salt, options, inventory, summary):
            matched.add((record["_key"], record["_node"]))
            written += _write_pair(out_dir, record, images)
            records.append(record)
    found = {study_key(i, key) for s in studies.values() for i in s}
    for k, r in sorted(rows.items(), key=lambda kv: kv[1].row):
        if k not in matched:
            reason = "its study's images were refused (above)" if r.key in found else "no DICOM study has it"
            summary.refused.append((f"labels row {r.row}", f"{key} {r.key!r} node {r.node}: {reason}"))
    _write_manifest(manifest, records)
    summary.privacy = inventory.report()
    leaks = verify_output(out_dir, [manifest, *written], inventory)
    if leaks:
        manifest.unlink()
        raise IngestError("the privacy check of the output failed, manifest removed:\n" + "\n".join(leaks))
    summary.cases = len(records)
    summary.labels = Counter(r["label"] or "unlabelled" for r in records)
    _write_log(out_dir / "ingest", summary)
    return summary


def study_key(instance: Instance, key: str) -> str:
    """The value the labels CSV's key column holds for this instance's study."""
    return instance.accession if key == "accession_number" else instance.study_uid


def _study_cases(instances: list[Instance], key: str, rows: dict[tuple[str, int], LabelRow], salt: bytes,
                 options: IngestOptions, inventory: PrivacyInventory, summary: IngestSummary):
    """Yield (manifest record, (B-mode, CDFI)) for each usable node of one study; refusals go to summary."""
    def refuse(members, reason: str) -> None:
        summary.refused += [(i.rel, reason) for i in members]

    value = {study_key(i, key) for i in instances}
    if len(value) != 1 or "" in value:
        refuse(instances, f"the study's files disagree on or lack the {key}")
        return
    (key_value,) = value
    if not any(k == key_value for k, _ in rows):
        refuse(instances, f"no row in the labels CSV for this study ({key} {key_value!r})")
        return
    ready = []
    for instance in instances:
        try:
            ready.append(prepare_image(instance, options.image, inventory))
        except ValueError as err:
            refuse([instance], str(err))
    try:
        pairs = pair_study(ready, options.pair_by)
    except ValueError as err:
        refuse([r.instance for r in ready], str(err))
        return
    for node, bmode, cdfi in pairs:
        row = rows.get((key_value, node))
        members = [bmode.instance, cdfi.instance]
        if row is None:
            refuse(members, f"node {node} of {key} {key_value!r} has no row in the labels CSV")
            continue
        try:
            record = _record(case_id(salt, instances[0].study_uid, node), row, bmode, cdfi)
        except ValueError as err:
            refuse(members, str(err))
            continue
        record.update(_key=key_value, _node=node)
        for image in (bmode, cdfi):
            summary.frame_rules[image.frame_rule] += 1
            summary.encodings[image.encoding] += 1
            summary.rescaled_files += image.regions_rescaled > 1
        yield record, (bmode, cdfi)


def _record(cid: str, row: LabelRow, bmode: ReadyImage, cdfi: ReadyImage) -> dict[str, str]:
    date = row.exam_date or bmode.instance.study_date
    if date is None:
        raise ValueError("no exam date: the header has no StudyDate; give exam_date in the labels CSV")
    record = {"case_id": cid, "bus_path": f"images/{cid}_bus.png", "cdfi_path": f"images/{cid}_cdfi.png",
              "label": row.label or "", "exam_date": date, "scanner": bmode.instance.scanner, "cohort": row.cohort,
              **dict.fromkeys((*ROI_COLUMNS, "mm_per_px_x", "mm_per_px_y"), "")}
    if row.roi is not None:
        record.update(zip(ROI_COLUMNS, map(str, _roi_in_crop(row.roi, bmode, cdfi))))
    if bmode.mm_per_px is not None:
        record["mm_per_px_x"], record["mm_per_px_y"] = (f"{v:.6g}" for v in bmode.mm_per_px)
    return record


def _roi_in_crop(roi: tuple[int, int, int, int], bmode: ReadyImage, cdfi: ReadyImage) -> tuple[int, int, int, int]:
    """The CSV's ROI (stored B-mode frame px) in the cropped images' px; both crops must hold it."""
    if bmode.crop[2:] != cdfi.crop[2:]:
        raise ValueError(f"the B-mode and CDFI imaging regions differ in size ({bmode.crop[2]}x{bmode.crop[3]} vs "
                         f"{cdfi.crop[2]}x{cdfi.crop[3]} px), so one ROI cannot be placed in both")
    x, y, w, h = roi
    x, y = x - bmode.crop[0], y - bmode.crop[1]
    if x < 0 or y < 0 or x + w > bmode.crop[2] or y + h > bmode.crop[3]:
        raise ValueError(f"the ROI {','.join(map(str, roi))} reaches outside the imaging region "
                         f"{','.join(map(str, bmode.crop))} (x, y, w, h) of the stored frame")
    return x, y, w, h


def _write_pair(out_dir: Path, record: dict[str, str], images: tuple[ReadyImage, ReadyImage]) -> list[Path]:
    paths = []
    for column, image in zip(("bus_path", "cdfi_path"), images):
        path = out_dir / record[column]
        if not cv2.imwrite(str(path), cv2.cvtColor(image.rgb, cv2.COLOR_RGB2BGR)):
            raise IngestError(f"could not write {path} (disk full or not writable?)")
        paths.append(path)
    return paths


def _write_manifest(path: Path, records: list[dict[str, str]]) -> None:
    """Atomically (a reader never sees half a manifest); optional columns only when some case has them."""
    used = [c for c in MANIFEST_COLUMNS if c in REQUIRED_COLUMNS or any(r.get(c) for r in records)]
    if any(r.get("roi_x") for r in records):  # ROI columns go together
        used = [c for c in MANIFEST_COLUMNS if c in used or c in ROI_COLUMNS]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=used, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(records, key=lambda r: r["case_id"]))
    os.replace(tmp, path)


def _remove_previous(manifest: Path) -> None:
    """With --force: the images an earlier ingest listed, then its manifest (only what it wrote)."""
    if not manifest.is_file():
        return
    with open(manifest, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for column in ("bus_path", "cdfi_path"):
                path = (manifest.parent / row.get(column, "")).resolve()
                if path.parent == (manifest.parent / "images").resolve() and path.is_file():
                    path.unlink()
    manifest.unlink()


def _write_log(folder: Path, summary: IngestSummary) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "refused.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["input", "reason"])
        writer.writerows(summary.refused)
    report = {"cases": summary.cases, "labels": dict(sorted(summary.labels.items())),
              "refused_inputs": len(summary.refused), "frame_rules": dict(sorted(summary.frame_rules.items())),
              "encodings": dict(sorted(summary.encodings.items())),
              "files_with_rescaled_regions": summary.rescaled_files, "privacy": summary.privacy}
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
