"""`clafed predict`: diagnose one case (or a manifest / folder of cases) with a CLA-HDM checkpoint.

Prints the four probabilities and the path taken through the hierarchy, writes each case's
heatmap picture, and for several cases a predictions.csv. A bad image is reported in one line
naming the file; the other cases are still predicted and the exit code is 1. With --dicom, one
case's result also goes out as DICOM (client/dicom_results.py) for the PACS that holds its images.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PAIR_NAME = re.compile(r"^(?P<case>.+)_(?P<kind>bus|cdfi)$", re.IGNORECASE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `clafed predict`."""
    parser.add_argument("--model", required=True, type=Path, help="CLA-HDM checkpoint (.pt) written by clafed")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bus", type=Path, help="the case's B-mode image (with --cdfi)")
    source.add_argument("--manifest", type=Path, help="a manifest.csv of cases (label may be empty)")
    source.add_argument("--folder", type=Path, help="a folder of pairs named <case>_bus.<ext> / <case>_cdfi.<ext>")
    parser.add_argument("--cdfi", type=Path, help="the case's colour Doppler image (with --bus)")
    parser.add_argument("--roi", type=parse_roi, default=None, metavar="x,y,w,h",
                        help="box around the node in pixels (with --bus/--cdfi; default: the model's localiser "
                             "proposes it, or the whole image for a model without one)")
    parser.add_argument("--id", dest="case_id", default=None, help="case id for --bus/--cdfi (default: file name)")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder for heatmap pictures and predictions.csv (and --dicom's files)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON instead of text: one object for --bus/--cdfi, a list otherwise")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--public-key", type=Path, default=None,
                        help="the coordinator's model_signing.pub: refuse a model it did not sign (MODEL.sig)")
    parser.add_argument("--dicom", action="store_true",
                        help="also write the result as DICOM into --out (with --bus/--cdfi and --dicom-reference): "
                             "<case>_sr.dcm, a structured report, and <case>_heatmap.dcm, the picture as secondary "
                             "capture, both in the study of the reference instances (research use only)")
    parser.add_argument("--dicom-reference", nargs="+", type=Path, default=None, metavar="FILE",
                        help="with --dicom: the original DICOM instance(s) the case's B-mode and CDFI images came "
                             "from (one or two files, B-mode first), e.g. those `clafed ingest` read")


def parse_roi(text: str) -> tuple[int, int, int, int]:
    """'x,y,w,h' -> four integers with a non-negative origin and a positive size."""
    try:
        x, y, w, h = (int(round(float(v))) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--roi {text!r}: expected four numbers x,y,w,h") from None
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"--roi {text!r}: origin must be >= 0 and size > 0")
    return x, y, w, h


def run(args: argparse.Namespace) -> int:
    """Predict every case; 0 when all succeeded, 1 when some case could not be predicted, 2 when the
    arguments or the model cannot be used."""
    if (args.bus is None) != (args.cdfi is None):
        return _fail("--bus and --cdfi go together: give both images of the case")
    if args.bus is None and (args.roi or args.case_id):
        return _fail("--roi and --id apply to a single case given with --bus/--cdfi")
    if args.dicom and args.bus is None:
        return _fail("--dicom applies to a single case given with --bus/--cdfi")
    if args.dicom and not args.dicom_reference:
        return _fail("--dicom needs --dicom-reference BMODE.dcm [CDFI.dcm]: the case's original DICOM instances, "
                     "whose study the results join")
    if args.dicom_reference and not args.dicom:
        return _fail("--dicom-reference is used with --dicom (add --dicom to write the DICOM results)")
    if args.dicom_reference and len(args.dicom_reference) > 2:
        return _fail("--dicom-reference takes one or two files: the case's B-mode and CDFI instances")

    from common.checkpoint import load_checkpoint
    from common.manifest import ManifestError
    from common.signing import signature_path, verify_checkpoint
    from common.training import resolve_device

    try:
        cases, problems = _cases(args)
        if args.public_key is not None:
            verify_checkpoint(args.model, args.public_key)  # SignatureError is a ValueError
        elif not signature_path(args.model).is_file():
            print(f"warning: {args.model} is unsigned; nothing shows who made it or that it is unchanged "
                  "(pass --public-key to require the coordinator's signature)", file=sys.stderr)
        loaded = load_checkpoint(args.model)
        dicom = _dicom_inputs(args) if args.dicom else None
    except (ManifestError, FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    device = resolve_device(args.device)
    results = []
    for case in cases:
        try:
            results.append(_predict_case(loaded, case, args.out, device, dicom))
        except ValueError as err:  # ImageError and friends name the file
            problems.append(f"case {case.case_id}: {err}")
    if args.bus is None:
        csv_path = write_predictions_csv(args.out / "predictions.csv", results)
    if args.json and (results or args.bus is None):
        print(json.dumps(results[0] if args.bus is not None else results, indent=2, ensure_ascii=False))
    else:
        for result in results:
            print(_text(result, single=args.bus is not None))
        if args.bus is None:
            print(f"{len(results)} case(s) predicted -> {csv_path}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _cases(args: argparse.Namespace):
    """The cases to predict and the problems already found (unpaired files in a folder)."""
    from common.manifest import Case
    from common.validation import load_cases

    if args.bus is not None:
        case_id = args.case_id or case_stem(args.bus.stem)
        return [Case(case_id, args.bus, args.cdfi, None, "", roi=args.roi)], []
    if args.manifest is not None:
        # Images are checked case by case below, so one bad file does not stop the others.
        return load_cases(args.manifest, check_images=False), []
    return folder_cases(args.folder)


def _dicom_inputs(args: argparse.Namespace) -> dict:
    """The reference instances' headers and the model's identity, for --dicom (ValueError naming a bad file)."""
    from client.dicom_results import read_references
    from common.signing import checkpoint_digest

    return {"references": read_references(args.dicom_reference),
            "model_info": {"checkpoint": args.model.name, "sha256": checkpoint_digest(args.model),
                           "signature_verified": args.public_key is not None}}  # verified above, or refused


def case_stem(stem: str) -> str:
    """A case id from an image's file name: `h1-0001_bus` -> `h1-0001`."""
    match = PAIR_NAME.match(stem)
    return match["case"] if match else stem


def folder_cases(folder: Path):
    """Cases from <case>_bus.<ext> / <case>_cdfi.<ext> pairs; unpaired files are problems."""
    from common.manifest import Case

    if not folder.is_dir():
        raise FileNotFoundError(f"--folder {folder}: not a folder")
    found: dict[str, dict[str, Path]] = {}
    problems = []
    for path in sorted(folder.iterdir()):
        match = PAIR_NAME.match(path.stem)
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES or not match:
            continue
        kind = match["kind"].lower()
        slot = found.setdefault(match["case"], {})
        if kind in slot:
            problems.append(f"case {match['case']}: two {kind.upper()} images, {slot[kind]} and {path}")
        slot.setdefault(kind, path)
    cases = []
    for case_id, pair in found.items():
        if len(pair) == 2:
            cases.append(Case(case_id, pair["bus"], pair["cdfi"], None, ""))
        else:
            have, lack = next(iter(pair.items())), "cdfi" if "bus" in pair else "bus"
            problems.append(f"case {case_id}: {have[1]} has no {lack.upper()} partner "
                            f"(expected {case_id}_{lack}.<png|jpg|...> in {folder})")
    if not cases and not problems:
        raise FileNotFoundError(f"--folder {folder}: no image pairs named <case>_bus.<ext> / <case>_cdfi.<ext>")
    return cases, problems


def check_images(case, min_size: int):
    """Read a case's two images, raising ImageError naming the file(s) for anything the model cannot use."""
    from common.imaging import ImageError
    from common.validation import image_problems

    images, problems = image_problems(case.bus_path, case.cdfi_path, case.roi, min_size)
    if problems:
        raise ImageError("; ".join(problems))
    return images


def _predict_case(loaded, case, out_dir: Path, device, dicom: dict | None = None) -> dict:
    from client.diagnosis import diagnose
    from client.heatmaps import picture_name, render_picture, write_picture

    bus, cdfi = check_images(case, loaded.data_config.min_image_size)
    diagnosis = diagnose(loaded, bus, cdfi, case.roi, case.case_id, device)
    rendered = render_picture(diagnosis.explanation, bus, cdfi, truth=case.label, proposed=diagnosis.proposed)
    picture = write_picture(out_dir / picture_name(case.case_id), rendered)
    result = dict(diagnosis.to_dict(), label=case.label, bus=str(case.bus_path), cdfi=str(case.cdfi_path),
                  picture=str(picture))
    if dicom is not None:
        result["dicom"] = write_dicom(result, rendered, out_dir, picture_name(case.case_id), dicom)
    return result


def write_dicom(result: dict, rendered, out_dir: Path, picture_file: str, dicom: dict) -> dict:
    """`<case>_sr.dcm` and `<case>_heatmap.dcm` next to the picture (same safe case name); their paths."""
    from client.dicom_results import write_heatmap_capture, write_structured_report

    stem = picture_file.removesuffix("_heatmap.png")
    references = dicom["references"]
    sr = write_structured_report(result, references, out_dir / f"{stem}_sr.dcm", model_info=dicom["model_info"])
    heatmap = write_heatmap_capture(rendered, references[0], out_dir / f"{stem}_heatmap.dcm", sources=references)
    return {"sr": str(sr), "heatmap": str(heatmap)}


def _text(result: dict, single: bool) -> str:
    probabilities = "  ".join(f"{c} {p:.3f}" for c, p in result["probabilities"].items())
    if single:
        box = ",".join(map(str, result["roi"])) if result.get("roi") else "-"
        return (f"diagnosis:     {result['diagnosis']}\npath:          {result['path']}\n"
                f"probabilities: {probabilities}\nnode box:      {box} ({result['roi_source']})\n"
                f"picture:       {result['picture']}"
                + (f"\ndicom:         {result['dicom']['sr']}, {result['dicom']['heatmap']}" if "dicom" in result else ""))
    return f"{result['case_id']}: {result['diagnosis']}  ({result['path']})  {probabilities}"


# The columns of `clafed evaluate`'s predictions.csv, then where each case's files are.
FILE_COLUMNS = ("path", "picture", "bus", "cdfi")


def write_predictions_csv(path: Path, results: list[dict]) -> Path:
    """One row per predicted case, in the predictions.csv format of `clafed evaluate` (so `clafed
    readers --predictions` reads either), followed by the diagnosis path and the files."""
    from client.evaluation import PREDICTION_COLUMNS, prediction_row

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=(*PREDICTION_COLUMNS, *FILE_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for r in results:
            row = prediction_row(r["case_id"], r.get("label"), r["probabilities"].values(), r["diagnosis"],
                                 r["level_probabilities"].values())
            writer.writerow(row | {k: r.get(k) or "" for k in FILE_COLUMNS})
    return path
