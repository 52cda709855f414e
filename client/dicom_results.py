"""`clafed predict --dicom`: one case's result as DICOM objects that a PACS files next to its images.

Two objects, each in a new series of the study the case's images came from (same StudyInstanceUID
and patient module, copied from the user's reference instances), so a PACS shows them with the images:

- a Comprehensive SR holding the diagnosis, the four probabilities, the node box and which model
  said so, with the B-mode/CDFI instances as its evidence;
- the heatmap picture as a secondary capture image, for viewers that show images but not SR.

CLA-HDM is a research model, and a PACS puts what it stores beside clinical images, so both say
RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE where a reader sees it first (series description, the
SR's first item) and where software looks (ContentQualification RESEARCH). The SR is never marked
verified or final: no clinician has signed it.

The SR follows no DICOM template: TID 1500 (measurement report) has no place for the diagnosis
path or the model's identity, and a template-less Comprehensive SR is valid and shown by SR viewers.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import highdicom as hd
import numpy as np
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem  # not re-exported by highdicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from common.labels import CLASSES

RESEARCH_ONLY = "RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE"
MANUFACTURER = "clafed"
MODEL_NAME = "CLA-HDM"
# Series numbers a scanner is unlikely to use, so clafed's series sort after the images'.
SR_SERIES_NUMBER, CAPTURE_SERIES_NUMBER = 9901, 9902

# clafed's own concepts, for what no DICOM (DCM) or SNOMED CT (SCT) code says exactly. The "99" prefix
# marks a private scheme (PS3.16 section 8); every object that uses it declares it (CodingSchemeIdentification).
SCHEME = "99CLAFED"
CODING_SCHEME = CodingSchemeIdentificationItem(
    designator=SCHEME, name="clafed CLA-HDM result concepts", responsible_organization=MANUFACTURER)


def _private(value: str, meaning: str) -> Code:
    return Code(value, SCHEME, meaning)


TITLE = _private("REPORT", "CLA-HDM cervical lymph node classification")
NOTICE = _private("NOTICE", "Intended use notice")
DIAGNOSIS_PATH = _private("PATH", "Diagnosis path")
CLASS_CODES = {c: _private(c.upper(), c) for c in CLASSES}
PROBABILITY_CODES = {c: _private(f"P-{c.upper()}", f"Probability of {c}") for c in CLASSES}
NODE_BOX = _private("NODE-BOX", "Node box x,y,w,h (pixels of the image given to clafed)")
NODE_BOX_SOURCE = _private("NODE-BOX-SOURCE", "Node box source")
MODEL = _private("MODEL", "Model identification")
CHECKPOINT = _private("CHECKPOINT", "Model checkpoint file")
MODEL_DIGEST = _private("MODEL-DIGEST", "Model digest (SHA-256 of weights and configuration, as signed)")
SIGNATURE_VERIFIED = _private("SIG-VERIFIED", "Model signature verified")
SOURCE_ROLES = (_private("BUS-IMAGE", "B-mode source image"), _private("CDFI-IMAGE", "Colour Doppler source image"))
# A UCUM annotation: a probability is dimensionless, and "{probability}" says which kind of number it is.
PROBABILITY_UNIT = hd.sr.CodedConcept("{probability}", "UCUM", "probability")

# Patient and study attributes of Type 2 (may be empty, must be present) that highdicom reads from the
# first evidence instance; scanners and anonymisers sometimes leave them out.
_TYPE2_HEADER = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                 "StudyDate", "StudyTime", "ReferringPhysicianName")
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def read_references(paths: Iterable[str | Path]) -> list[Dataset]:
    """The headers of the case's original DICOM instances (B-mode first, then CDFI).

    Raises ValueError naming the file for one that is not DICOM or cannot be referenced, and for
    references from two studies: the results go into one study, so they must all come from it.
    """
    references = []
    for path in map(Path, paths):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)  # only the header is referenced
        except FileNotFoundError:
            raise ValueError(f"--dicom-reference {path}: file not found") from None
        except (InvalidDicomError, OSError, EOFError) as err:
            raise ValueError(f"--dicom-reference {path}: not a readable DICOM file ({err.__class__.__name__}); "
                             "give the original instance the case's image was exported or ingested from") from None
        missing = [k for k in _REQUIRED_UIDS if not str(ds.get(k, "") or "").strip()]
        if missing:
            raise ValueError(f"--dicom-reference {path}: lacks {', '.join(missing)}, so nothing can refer to it; "
                             "give the instance as the scanner or PACS stored it")
        if references and ds.StudyInstanceUID != references[0].StudyInstanceUID:
            raise ValueError(f"--dicom-reference {path}: from another study than {references[0].filename} "
                             "(StudyInstanceUID differs); give the B-mode and CDFI instances of one study")
        references.append(ds)
    if not references:
        raise ValueError("--dicom-reference: no file given")
    return references


def _with_type2(reference: Dataset) -> Dataset:
    """A copy of the reference with every Type 2 patient/study attribute present (empty if it had none)."""
    header = copy.deepcopy(reference)  # a header only (read without pixels); the caller's stays as read
    for keyword in _TYPE2_HEADER:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


@contextlib.contextmanager
def _names_as_stored():
    """Copy the patient's name as the scanner stored it: highdicom warns about one-part names
    ("DOE" rather than "DOE^JANE"), which are the source's, and the user can do nothing about them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name", category=UserWarning)
        yield


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"clafed {version('clafed')}"
    except PackageNotFoundError:
        return "clafed (version unknown)"


def write_structured_report(result: dict, references: list[Dataset], path: Path, *, model_info: dict) -> Path:
    """Write a case's `clafed predict` result as a Comprehensive SR in the references' study.

    `result` is predict's result dict (diagnosis, path, probabilities, roi, roi_source); `model_info`
    names the model: checkpoint (file name), sha256 (optional digest), signature_verified (bool).
    """
    text, code, num = hd.sr.TextContentItem, hd.sr.CodeContentItem, hd.sr.NumContentItem
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    digest = model_info.get("sha256")
    # The device observer: the same model always gets the same UID, a model without digest a new one.
    device_uid = pydicom.uid.generate_uid(entropy_srcs=[MANUFACTURER, digest]) if digest else hd.UID()
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid, name=f"{MANUFACTURER} {MODEL_NAME}", manufacturer_name=MANUFACTURER,
            model_name=MODEL_NAME))

    finding = code(codes.DCM.Finding, CLASS_CODES[result["diagnosis"]], contains)
    finding.ContentSequence = [code(codes.SCT.FindingSite, codes.SCT.LymphNode,
                                    hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD)]
    roi = result.get("roi")
    model = hd.sr.ContainerContentItem(MODEL, relationship_type=contains)
    model.ContentSequence = [
        text(codes.DCM.AlgorithmName, f"{MANUFACTURER} {MODEL_NAME}", contains),
        text(codes.DCM.AlgorithmVersion, _version(), contains),
        text(CHECKPOINT, str(model_info["checkpoint"]), contains),
        *([text(MODEL_DIGEST, digest, contains)] if digest else []),
        code(SIGNATURE_VERIFIED, codes.SCT.Yes if model_info.get("signature_verified") else codes.SCT.No, contains),
    ]
    # The box is in the pixels of the PNG given to `clafed predict`, which `clafed ingest` cropped from
    # the DICOM frame: as text, not as an SCOORD on the instance, whose pixel grid differs.
    roles = SOURCE_ROLES if len(references) == 2 else (codes.DCM.SourceImage,) * len(references)
    root = hd.sr.ContainerContentItem(TITLE)
    root.ContentSequence = [
        *observer,  # observation context first, as TID 1001 puts it
        text(NOTICE, RESEARCH_ONLY, contains),  # the first finding-like item, so viewers show it before the result
        finding,
        text(DIAGNOSIS_PATH, result["path"].replace("\u2192", "->"), contains),
        *(num(PROBABILITY_CODES[c], float(result["probabilities"][c]), PROBABILITY_UNIT, relationship_type=contains)
          for c in CLASSES),
        text(NODE_BOX, ",".join(map(str, roi)) if roi else "none", contains),
        text(NODE_BOX_SOURCE, result.get("roi_source") or "unknown", contains),
        model,
        *(hd.sr.ImageContentItem(role, ref.SOPClassUID, ref.SOPInstanceUID, relationship_type=contains)
          for role, ref in zip(roles, references)),
    ]
    with _names_as_stored():
        report = hd.sr.ComprehensiveSR(
            evidence=[_with_type2(references[0]), *references[1:]], content=root,
            series_instance_uid=hd.UID(), series_number=SR_SERIES_NUMBER, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
            software_versions=_version(), series_description=f"{MODEL_NAME} result - {RESEARCH_ONLY}",
            content_qualification="RESEARCH", coding_schemes=[CODING_SCHEME],
            is_complete=True, is_final=False, is_verified=False)  # preliminary and unverified: nobody signed it
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report.save_as(path, enforce_file_format=True)
    return path


def write_heatmap_capture(picture_rgb: np.ndarray, reference: Dataset, path: Path, *,
                          sources: Sequence[Dataset] = ()) -> Path:
    """Write the heatmap picture (H, W, 3 uint8 RGB) as a secondary capture image in the reference's study.

    `sources` (default: the reference) are listed as the images it was derived from.
    """
    with _names_as_stored():
        capture = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=reference, pixel_array=np.ascontiguousarray(picture_rgb, dtype=np.uint8),
            photometric_interpretation="RGB", bits_allocated=8,
            # highdicom asks for an orientation; a rendered picture has none, so it is emptied below.
            coordinate_system="PATIENT", patient_orientation=("L", "F"),
            series_instance_uid=hd.UID(), series_number=CAPTURE_SERIES_NUMBER, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
            software_versions=_version(), series_description=f"{MODEL_NAME} heatmaps - {RESEARCH_ONLY}",
            content_qualification="RESEARCH", transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian)
    capture.PatientOrientation = None  # Type 2: empty rather than invented
    capture.BurnedInAnnotation = "YES"  # the picture shows the diagnosis, probabilities and legend as text
    capture.DerivationDescription = f"{MODEL_NAME} Layer-CAM heatmaps over the B-mode and CDFI images; {RESEARCH_ONLY}"
    source_items = []
    for source in sources or [reference]:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
        source_items.append(item)
    capture.SourceImageSequence = source_items
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    capture.save_as(path, enforce_file_format=True)
    return path
