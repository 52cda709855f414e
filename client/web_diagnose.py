"""`clafed serve --model`: the Diagnose page. A radiologist uploads a case's B-mode and CDFI
images (PNG/JPEG or DICOM), draws the node's box or lets the localiser propose it, and sees the
diagnosis path, the four probabilities and each level's Layer-CAM maps over both images.

The case goes through client/diagnosis.py, as in `clafed predict`, so both give the same
probabilities. Uploads are decoded in memory (client/uploads.py) and never stored or sent on.
"""
from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from client.diagnosis import diagnose
from client.heatmaps import heat_colours, render_picture
from client.predict_cli import case_stem
from client.uploads import Upload, UploadError, decode_upload, safe_name
from common.checkpoint import LoadedModel
from common.labels import CLASSES
from common.validation import decoded_image_problems
from common.web.app import Page, bad_request, page_data, png_data_url, render


class ImageUpload(BaseModel):
    name: str = Field(default="upload", max_length=255)
    data: str  # base64 of the file's bytes; the request's size is bounded by common.web.access


class DecodeRequest(ImageUpload):
    slot: str = Field(pattern="^(bus|cdfi)$")


class DiagnoseRequest(BaseModel):
    bus: ImageUpload
    cdfi: ImageUpload
    roi: list[float] | None = Field(default=None, min_length=4, max_length=4)
    case_id: str = Field(default="", max_length=120)


@dataclass(frozen=True)
class ModelInfo:
    """What the page says about the model: which file, its digest, whether its signature checked."""

    file: str
    sha256: str
    signature: str  # "verified with KEY (fingerprint ...)" or why it was not
    has_localiser: bool

    @classmethod
    def describe(cls, model_path: Path, loaded: LoadedModel, public_key: Path | None) -> "ModelInfo":
        from common.signing import checkpoint_digest, signature_path

        if public_key is not None:  # serve_cli verified it before starting
            fingerprint = hashlib.sha256(Path(public_key).read_bytes()).hexdigest()[:16]
            signature = f"signature verified with {Path(public_key).name} (key fingerprint {fingerprint})"
        elif signature_path(model_path).is_file():
            signature = "signed, but not verified: start clafed serve with --public-key to check it"
        else:
            signature = "unsigned: nothing shows who made this model or that it is unchanged"
        return cls(model_path.name, checkpoint_digest(model_path), signature, loaded.model.has_localiser)


def checked_roi(values: list[float] | None) -> tuple[int, int, int, int] | None:
    if values is None:
        return None
    if not all(math.isfinite(v) and abs(v) < 1e9 for v in values):
        raise bad_request("the node's box must be four finite numbers x, y, width, height (pixels)")
    x, y, w, h = (int(round(v)) for v in values)
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise bad_request(f"the node's box {x},{y},{w},{h} needs an origin >= 0 and a positive size")
    return x, y, w, h


def heat_layer(heat: np.ndarray) -> str:
    """A level's map as an RGBA PNG (JET colours, transparent where cold), for the page to lay over
    the image at the opacity its slider sets; at full opacity it matches the pictures' blend."""
    alpha = np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8)[..., None]
    return png_data_url(np.concatenate([heat_colours(heat), alpha], axis=2))


class Diagnoser:
    """The loaded model and what a request may ask of it; one case at a time (hooks are not thread-safe)."""

    def __init__(self, loaded: LoadedModel, info: ModelInfo, device: torch.device, max_pixels: int):
        self.loaded, self.info, self.device, self.max_pixels = loaded, info, device, max_pixels
        self._lock = threading.Lock()

    def upload(self, slot: str, image: ImageUpload, roi: tuple[int, int, int, int] | None = None) -> Upload:
        """The decoded upload, checked as the site checks its own images (with the box, when given)."""
        try:
            upload = decode_upload(slot, image.name, image.data, self.max_pixels)
        except UploadError as err:
            raise bad_request(str(err)) from None
        column = "bus_path" if slot == "bus" else "cdfi_path"
        problems = decoded_image_problems(column, upload.name, upload.rgb, roi, self.loaded.data_config.min_image_size)
        if problems:
            raise bad_request("; ".join(problems))
        return upload

    def propose(self, image: ImageUpload) -> list[int]:
        from common.localiser import propose_box

        if not self.loaded.model.has_localiser:
            raise bad_request("this model has no node localiser: draw the node's box on the B-mode image", 409)
        bus = self.upload("bus", image)
        with self._lock:
            return list(propose_box(self.loaded.model.localiser, bus.rgb, self.loaded.data_config.localiser_size,
                                    self.device))

    def run(self, request: DiagnoseRequest) -> dict:
        roi = checked_roi(request.roi)
        bus, cdfi = self.upload("bus", request.bus, roi), self.upload("cdfi", request.cdfi, roi)
        case_id = safe_name(request.case_id) if request.case_id else case_stem(Path(bus.name).stem)
        with self._lock:
            diagnosis = diagnose(self.loaded, bus.rgb, cdfi.rgb, roi, case_id, self.device)
        explanation = diagnosis.explanation
        picture = render_picture(explanation, bus.rgb, cdfi.rgb, proposed=diagnosis.proposed)
        return {
            "result": dict(diagnosis.to_dict(), bus=bus.name, cdfi=cdfi.name, bus_source=bus.source,
                           cdfi_source=cdfi.source, model=self.info.file, model_sha256=self.info.sha256),
            "classes": list(CLASSES),
            "images": {"bus": png_data_url(bus.rgb), "cdfi": png_data_url(cdfi.rgb)},
            "levels": [{"level": s.level.key, "title": s.level.title, "class": s.name, "probability": s.probability,
                        "bus": heat_layer(s.bus), "cdfi": heat_layer(s.cdfi)} for s in explanation.steps],
            "picture": png_data_url(picture),
        }


def diagnose_page(diagnoser: Diagnoser) -> Page:
    router = APIRouter()

    @router.get("/diagnose", response_class=HTMLResponse)
    def page(request: Request) -> HTMLResponse:
        info = diagnoser.info
        return render(request, "diagnose.html", info=info, data=page_data({"has_localiser": info.has_localiser}))

    @router.post("/api/diagnose/decode")
    def decode(body: DecodeRequest) -> dict:
        upload = diagnoser.upload(body.slot, body)
        height, width = upload.rgb.shape[:2]
        return {"image": png_data_url(upload.rgb), "width": width, "height": height, "source": upload.source,
                "name": upload.name}

    @router.post("/api/diagnose/propose")
    def propose(body: ImageUpload) -> dict:
        return {"roi": diagnoser.propose(body)}

    @router.post("/api/diagnose/run")
    def run(body: DiagnoseRequest) -> dict:
        return diagnoser.run(body)

    return Page(router, "/diagnose", "Diagnose", "upload a case's B-mode and CDFI images: diagnosis path and heatmaps")
