"""`clafed ingest`: a site's DICOM export and diagnosis CSV turned into a validated site folder.

The pieces, in the order a file meets them: `scan` reads every file's header and groups the
instances by study; `regions` and `frames` find the imaging area and decode the chosen frame as
RGB; `pairing` tells B-mode from CDFI and pairs them into nodes; `labels` reads the site's diagnosis
CSV; `privacy` inventories what identifying data the inputs held and proves none of it reached the
output; `run` writes the PNGs and `manifest.csv`. Everything stays in the site's own folders.
"""
