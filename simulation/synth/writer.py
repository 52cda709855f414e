"""Write a preset's cases to disk: images, masks and one manifest.csv per virtual hospital."""
from __future__ import annotations

import csv
import json
import os
import struct
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from simulation.synth.cohort import CasePlan, Preset, cohort_plan, get_preset
from simulation.synth.render import render_case

MANIFEST_COLUMNS = ("case_id", "bus_path", "cdfi_path", "label", "exam_date", "scanner",
                    "roi_x", "roi_y", "roi_w", "roi_h", "node_mask_path", "vessel_mask_path", "cohort")


def encode_png(image: np.ndarray) -> bytes:
    """8-bit grey (H, W) or BGR (H, W, 3) image as PNG bytes, stored RGB as cv2.imwrite does.

    No per-row filter search and zlib level 1: speckle barely compresses, and OpenCV's encoder
    spent as long writing a case as rendering it.
    """
    height, width = image.shape[:2]
    colour = image.ndim == 3
    pixels = image[:, :, ::-1] if colour else image  # PNG stores RGB
    raw = np.zeros((height, 1 + width * (3 if colour else 1)), np.uint8)  # filter byte 0 per row
    raw[:, 1:] = pixels.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if colour else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) \
        + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_png(path: Path, image: np.ndarray) -> None:
    path.write_bytes(encode_png(np.ascontiguousarray(image)))


def write_case(plan: CasePlan, seed: int, out_dir: str) -> dict[str, str]:
    """Render one case, write its two images and two masks, and return its manifest row."""
    case = render_case(plan, seed)
    site = Path(out_dir) / plan.site
    rel = {"bus_path": f"images/{plan.case_id}_bus.png", "cdfi_path": f"images/{plan.case_id}_cdfi.png",
           "node_mask_path": f"masks/{plan.case_id}_node.png",
           "vessel_mask_path": f"masks/{plan.case_id}_vessel.png"}
    for key, image in (("bus_path", case.bus), ("cdfi_path", case.cdfi),
                       ("node_mask_path", case.node_mask), ("vessel_mask_path", case.vessel_mask)):
        _write_png(site / rel[key], image)
    x, y, w, h = case.roi
    return {"case_id": plan.case_id, "label": plan.label, "exam_date": plan.exam_date,
            "scanner": plan.scanner, "roi_x": str(x), "roi_y": str(y), "roi_w": str(w), "roi_h": str(h),
            "cohort": plan.cohort, **rel}


def _init_worker() -> None:
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(1)


def _star(job: tuple) -> dict[str, str]:
    function, *args = job
    return function(*args)


def run_cases(function: Callable[..., dict[str, str]], jobs: list[tuple], workers: int) -> list[dict[str, str]]:
    """`function(*job)` for every job, in `workers` processes (results never depend on the count).

    `function` must be a module-level function (spawned workers import it by name).
    """
    tasks = [(function, *job) for job in jobs]
    if workers <= 1:
        _init_worker()
        return [_star(task) for task in tasks]
    # spawn, not fork: the parent may hold threads (torch, pytest) that fork would copy mid-state.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        return list(pool.map(_star, tasks, chunksize=8))


def write_rows(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...], key: str) -> None:
    """Write CSV rows sorted by `key` with a fixed column order."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r[key]))


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """Write manifest rows in case-id order with the fixed column order."""
    write_rows(path, rows, MANIFEST_COLUMNS, "case_id")


def generate(preset: str | Preset, seed: int, out_dir: str | Path, workers: int | None = None) -> dict[str, Path]:
    """Render a preset into `out_dir/<site>/` and return each site's manifest path.

    Args:
        preset: `paper`, `small` or a custom `Preset`.
        seed: non-negative integer; the same seed writes the same bytes.
        out_dir: output folder (created; existing case files are overwritten).
        workers: processes to render with (default: all cores); does not change the output.
            More than one starts spawned processes, so a script calling this needs the usual
            `if __name__ == "__main__":` guard.
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    preset = get_preset(preset)
    out_dir = Path(out_dir)
    plans = cohort_plan(preset, seed)
    for site in preset.sites:
        (out_dir / site / "images").mkdir(parents=True, exist_ok=True)
        (out_dir / site / "masks").mkdir(parents=True, exist_ok=True)
    rows = run_cases(write_case, [(plan, seed, str(out_dir)) for plan in plans], workers or os.cpu_count() or 1)
    manifests = {}
    for site in preset.sites:
        manifests[site] = out_dir / site / "manifest.csv"
        site_ids = {p.case_id for p in plans if p.site == site}
        write_manifest(manifests[site], [r for r in rows if r["case_id"] in site_ids])
    write_settings(out_dir / "synth.json", preset, seed)
    return manifests


def write_settings(path: Path, preset: Preset, seed: int, **extra: str) -> None:
    """The resolved generation settings, beside the data they produced."""
    settings = {"generator": "clafed synth", **extra, "preset": asdict(preset), "seed": seed}
    path.write_text(json.dumps(settings, indent=2) + "\n")
