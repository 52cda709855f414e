"""Privacy at the door: what identifying data the DICOM inputs held, and proof that none of it
reached the site folder.

Three places hold identity in an ultrasound export: the header (names, IDs, accession numbers,
dates of birth, institution and staff), `BurnedInAnnotation`, and text drawn into the screen
around the image. The ingest never copies a header value into its output, crops every frame to
its imaging region (which removes the screen's text), derives case ids from a salted hash, and
then checks its own output against the values it saw (`verify_output`).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# Header attributes that identify a patient, a visit or the staff (PS3.15's basic profile, the
# ones ultrasound exports carry). Counted per file; their values are kept in memory only.
IDENTIFYING_FIELDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthDate", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "IssuerOfPatientID", "MedicalRecordLocator",
    "AccessionNumber", "StudyID", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord", "StationName", "DeviceSerialNumber",
)
# Words of a header value shorter than this are too common to search for (sex "F", StudyID "1"),
# and numbers shorter than MIN_NUMBER would match ROI coordinates; whole values and UIDs of
# MIN_WHOLE characters or more are searched as they are.
MIN_WORD, MIN_NUMBER, MIN_WHOLE = 3, 6, 8
# PNG chunks that carry no text; anything else (tEXt, zTXt, iTXt, eXIf, ...) is refused.
PLAIN_PNG_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"sRGB", b"gAMA", b"pHYs", b"cHRM", b"sBIT"}
# Text-like marks: bright strokes a few px thick on a dark screen, in runs the size of a word.
_STROKE_CONTRAST = 60
_WORD_HEIGHT = (5, 40)
_WORD_MIN_WIDTH = 8


@dataclass
class PrivacyInventory:
    """Counts of what the inputs held (site-local report); their values stay in memory (`leaks`), never written."""

    files: int = 0
    fields: Counter = field(default_factory=Counter)  # attribute -> files where it was non-empty
    burned_in_flagged: int = 0  # BurnedInAnnotation == YES
    text_outside_region: int = 0  # files with text-like marks outside the imaging region (cropped away)
    without_region: int = 0  # files written uncropped (only with --allow-uncropped)
    _words: set[str] = field(default_factory=set, repr=False)
    _wholes: set[str] = field(default_factory=set, repr=False)

    def add_header(self, ds) -> None:
        """Count one file's identifying attributes and remember their values for `verify_output`."""
        self.files += 1
        for name in IDENTIFYING_FIELDS:
            value = ds.get(name)
            if value in (None, ""):
                continue
            self.fields[name] += 1
            for text in _strings(value):
                self._remember(text)
        for name in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if ds.get(name):
                self._remember(str(ds.get(name)))
        if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
            self.burned_in_flagged += 1

    def report(self) -> dict:
        """The aggregate inventory as JSON-ready counts."""
        return {"files": self.files, "identifying_fields": dict(sorted(self.fields.items())),
                "burned_in_annotation_yes": self.burned_in_flagged,
                "text_like_marks_outside_region": self.text_outside_region,
                "written_without_region_crop": self.without_region}

    def _remember(self, text: str) -> None:
        text = text.strip().lower()
        if len(text) >= MIN_WHOLE:
            self._wholes.add(text)
        self._words.update(w for w in _words(text)
                           if (len(w) >= MIN_NUMBER if w.isdigit() else len(w) >= MIN_WORD))

    def leaks(self, text: str) -> bool:
        """Whether `text` holds a remembered value: a whole value, or one of its words as a word."""
        text = text.lower()
        return any(w in self._words for w in _words(text)) or any(v in text for v in self._wholes)


def _strings(value) -> list[str]:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)]


def _words(text: str) -> set[str]:
    """Alphanumeric runs: a person name 'DOE^JANE' gives 'doe' and 'jane'."""
    return {w for w in re.split(r"[^0-9a-z]+", text.lower()) if w}


def text_like_marks(rgb: np.ndarray, keep: tuple[int, int, int, int] | None) -> int:
    """Word-sized clusters of bright thin strokes outside `keep` (x, y, w, h); 0 when keep is None.

    Top-hat filtering keeps strokes thinner than the kernel; grouping them horizontally joins the
    letters of a word. Used to report burned-in text that the crop removed, never to decide.
    """
    if keep is None:
        return 0
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    strokes = cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, np.ones((7, 7), np.uint8)) > _STROKE_CONTRAST
    x, y, w, h = keep
    strokes[y:y + h, x:x + w] = False
    words = cv2.dilate(strokes.astype(np.uint8), np.ones((3, 9), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(words, connectivity=8)
    widths, heights = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    return int(np.sum((heights >= _WORD_HEIGHT[0]) & (heights <= _WORD_HEIGHT[1]) & (widths >= _WORD_MIN_WIDTH)))


def png_chunks(path: Path) -> list[bytes]:
    """The chunk types of a PNG file, in order."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    kinds, pos = [], 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kinds.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return kinds


def verify_output(out_dir: Path, written: list[Path], inventory: PrivacyInventory) -> list[str]:
    """Problems found in what the ingest wrote: a header value in a text file or a file name, a PNG
    with a text or metadata chunk. Empty when the output is clean."""
    problems = []
    for path in written:
        if inventory.leaks(str(path.relative_to(out_dir))):
            problems.append(f"{path.name}: its path holds an identifying header value")
        if path.suffix == ".png":
            extra = [k.decode("latin-1") for k in png_chunks(path) if k not in PLAIN_PNG_CHUNKS]
            if extra:
                problems.append(f"{path.name}: PNG carries metadata chunk(s) {', '.join(sorted(set(extra)))}")
        else:
            if inventory.leaks(path.read_text(encoding="utf-8", errors="replace")):
                problems.append(f"{path.name}: holds an identifying header value")
    return problems
