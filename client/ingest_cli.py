"""`clafed ingest DICOM_FOLDER --labels LABELS.csv --out SITE_FOLDER`: a DICOM export to a site folder."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `clafed ingest`."""
    from client.ingest.frames import FRAME_RULES
    from client.ingest.pairing import PAIR_RULES

    parser.add_argument("dicom_folder", type=Path, help="the DICOM export (a folder, with or without a DICOMDIR)")
    parser.add_argument("--labels", type=Path, required=True,
                        help="CSV of diagnoses: accession_number or study_instance_uid, label, and optionally "
                             "exam_date, node, cohort, roi_x, roi_y, roi_w, roi_h (stored B-mode frame px)")
    parser.add_argument("--out", type=Path, required=True, help="the site folder to write (images/, manifest.csv)")
    parser.add_argument("--frame", choices=FRAME_RULES, default="auto",
                        help="which frame of a cine: the marked key frame, the middle one, the one with most flow "
                             "(CDFI), or auto: the marked one, else most flow for CDFI and middle for B-mode")
    parser.add_argument("--pair-by", choices=PAIR_RULES, default="order",
                        help="order: the k-th B-mode and k-th CDFI image of a study are node k; series: one node "
                             "per series")
    parser.add_argument("--rescale-regions", action="store_true",
                        help="accept ultrasound regions written for a larger frame (the export was downscaled): "
                             "scale them by the smallest integer factor that fits")
    parser.add_argument("--allow-uncropped", action="store_true",
                        help="keep whole frames of files without ultrasound regions (only if they hold no text)")
    parser.add_argument("--min-colour-fraction", type=float, default=0.002,
                        help="share of coloured pixels that makes an image without a colour-flow region CDFI")
    parser.add_argument("--salt-file", type=Path, default=None,
                        help="the site's secret for case ids (default: SITE_FOLDER/.ingest-salt, created once; keep "
                             "it, or case ids change)")
    parser.add_argument("--force", action="store_true", help="replace the manifest and images of an earlier ingest")


def run(args: argparse.Namespace) -> int:
    """Ingest, print the summary and every refusal, then validate the written manifest."""
    from client.ingest.images import ImageOptions
    from client.ingest.run import IngestOptions, ingest
    from common.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_PROBLEMS
    from common.validation import validate_manifest

    if not 0.0 < args.min_colour_fraction < 1.0:
        print(f"--min-colour-fraction must lie between 0 and 1, got {args.min_colour_fraction}")
        return EXIT_BAD_INPUT
    options = IngestOptions(ImageOptions(args.frame, args.rescale_regions, args.allow_uncropped,
                                         args.min_colour_fraction), args.pair_by, args.salt_file, args.force)
    summary = ingest(args.dicom_folder, args.labels, args.out, options)
    for where, reason in summary.refused:
        print(f"refused {where}: {reason}")
    labels = ", ".join(f"{n} {label}" for label, n in sorted(summary.labels.items()))
    print(f"{summary.cases} case(s) ({labels or 'none'}) -> {summary.manifest}; {len(summary.refused)} refused "
          f"(listed in {summary.manifest.parent / 'ingest' / 'refused.csv'})")
    privacy = summary.privacy
    fields = ", ".join(f"{k} {v}" for k, v in privacy["identifying_fields"].items()) or "none"
    print(f"privacy: {privacy['files']} file(s) read; identifying header fields (files): {fields}; "
          f"BurnedInAnnotation YES: {privacy['burned_in_annotation_yes']}; text-like marks outside the imaging "
          f"region (cropped away): {privacy['text_like_marks_outside_region']}; none of it is in the output")
    if not summary.cases:
        return EXIT_PROBLEMS
    problems = validate_manifest(summary.manifest)
    for problem in problems:
        print(problem)
    print(f"clafed validate {summary.manifest}: " + (f"{len(problems)} problem(s)" if problems else "OK"))
    return EXIT_PROBLEMS if problems or summary.refused else EXIT_OK
