"""The Diagnose page's API (client/web_diagnose.py): the same answer as `clafed predict`, clear
refusals naming the upload, DICOM uploads, the model's signature, nothing written anywhere."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from common.cli import main
from common.labels import CLASSES
from common.signing import sign_checkpoint
from common.validation import load_cases
from server.certs import generate_credentials
from tests import dicomgen
from tests.sitegen import write_site
from tests.web.harness import client, upload, upload_bytes


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return load_cases(write_site(tmp_path_factory.mktemp("site"), {c: 1 for c in CLASSES}))


@pytest.fixture(scope="module")
def web(checkpoint):
    return client("--model", checkpoint)


def body(case, **changes) -> dict:
    request = {"bus": upload(case.bus_path), "cdfi": upload(case.cdfi_path), "roi": list(case.roi),
               "case_id": case.case_id}
    return {**request, **changes}


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def test_the_answer_is_clafed_predicts_for_the_same_case_and_box(web, checkpoint, cases, tmp_path, capsys):
    case = cases[3]
    answer = web.post("/api/diagnose/run", json=body(case))
    assert answer.status_code == 200, answer.text
    got = answer.json()
    roi = ",".join(map(str, got["result"]["roi"]))
    assert main(["predict", "--model", str(checkpoint), "--bus", str(case.bus_path), "--cdfi", str(case.cdfi_path),
                 "--roi", roi, "--out", str(tmp_path), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    for key in ("probabilities", "gated_probabilities", "level_probabilities"):
        np.testing.assert_allclose(list(got["result"][key].values()), list(expected[key].values()), atol=1e-6)
    assert got["result"]["path"] == expected["path"] and got["result"]["diagnosis"] == expected["diagnosis"]
    assert got["result"]["roi_source"] == "given" and got["result"]["case_id"] == case.case_id
    # One pair of map layers per level on the path, each the image's size, and the picture.
    assert [lv["level"] for lv in got["levels"]] == [lv["level"] for lv in expected["levels"]]
    for level in got["levels"]:
        for slot, path in (("bus", case.bus_path), ("cdfi", case.cdfi_path)):
            assert level[slot].startswith("data:image/png;base64,")
            layer = cv2.imdecode(np.frombuffer(__import__("base64").b64decode(level[slot].split(",", 1)[1]), np.uint8),
                                 cv2.IMREAD_UNCHANGED)
            assert layer.shape[:2] == cv2.imread(str(path)).shape[:2] and layer.shape[2] == 4
    assert got["picture"].startswith("data:image/png;base64,")


def test_without_a_box_a_model_without_localiser_reads_the_whole_image(web, cases):
    answer = web.post("/api/diagnose/run", json=body(cases[0], roi=None)).json()
    assert answer["result"]["roi"] is None and answer["result"]["roi_source"].startswith("none (whole image")
    refused = web.post("/api/diagnose/propose", json=upload(cases[0].bus_path))
    assert refused.status_code == 409 and "no node localiser" in refused.json()["detail"]


def test_bad_uploads_are_refused_naming_the_slot_and_file(web, cases):
    case = cases[1]
    cases_and_messages = [
        (body(case, bus={"name": "b.png", "data": "not base64!"}),
         "B-mode (BUS) image b.png: the upload is not valid base64"),
        (body(case, cdfi=upload_bytes(b"\x89PNG broken", "c.png")), "unreadable image colour Doppler (CDFI) image c.png"),
        (body(case, cdfi=upload(case.bus_path, "grey.png")), "no Doppler colour at all in grey.png"),
        (body(case, roi=[0, 0, 5000, 10]), "lies outside the bus_path image"),
        (body(case, roi=[-1, 0, 5, 5]), "origin >= 0"),
        (body(case, roi=[0, 0, float("inf"), 5]), "four finite numbers"),
        (body(case, bus=upload_bytes(png(np.zeros((8, 8, 3), np.uint8)), "tiny.png")), "image too small: tiny.png"),
    ]
    for request, message in cases_and_messages:  # as text: Python's JSON writes Infinity, as a client may
        answer = web.post("/api/diagnose/run", content=json.dumps(request), headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and message in answer.json()["detail"], (message, answer.text)


def test_an_image_over_the_sites_pixel_limit_is_refused_before_decoding(checkpoint, cases, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(f"name: h1\nmanifest: {cases[0].bus_path.parent.parent / 'manifest.csv'}\nmax_image_pixels: 9000\n"
                    f"min_image_size: 32\noutput_dir: {tmp_path / 'out'}\n")
    web = client("--model", checkpoint, "--site", site)
    big = upload_bytes(png(np.zeros((100, 100, 3), np.uint8)), "big.png")
    answer = web.post("/api/diagnose/decode", json={"slot": "bus", **big})
    assert answer.status_code == 400 and "image too large" in answer.json()["detail"] and "9,000" in answer.json()["detail"]


def test_dicom_uploads_are_read_as_ingest_reads_them_and_must_sit_in_their_slot(web, tmp_path):
    bmode, cdfi = dicomgen.write_pair(tmp_path, dicomgen.Study(), seed=3)
    decoded = web.post("/api/diagnose/decode", json={"slot": "bus", **upload(bmode)})
    assert decoded.status_code == 200, decoded.text
    assert decoded.json()["source"].startswith("DICOM, frame 1") and "cropped to the region" in decoded.json()["source"]
    wrong = web.post("/api/diagnose/decode", json={"slot": "bus", **upload(cdfi)})
    assert wrong.status_code == 400 and "is colour-flow (CDFI); put it in the other slot" in wrong.json()["detail"]
    answer = web.post("/api/diagnose/run", json={"bus": upload(bmode), "cdfi": upload(cdfi), "roi": None})
    assert answer.status_code == 200 and answer.json()["result"]["cdfi_source"].startswith("DICOM")
    truncated = bmode.read_bytes()[:400]
    refused = web.post("/api/diagnose/decode", json={"slot": "bus", **upload_bytes(truncated, "cut.dcm")})
    assert refused.status_code == 400 and "cut.dcm" in refused.json()["detail"]


def test_uploads_are_not_written_anywhere(web, cases, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    roots = [tmp_path, cases[0].bus_path.parent.parent]
    before = {p for root in roots for p in root.rglob("*")}
    assert web.post("/api/diagnose/run", json=body(cases[2])).status_code == 200
    assert {p for root in roots for p in root.rglob("*")} == before


def test_the_page_shows_whether_the_models_signature_was_verified(checkpoint, tmp_path):
    ours = generate_credentials(tmp_path / "ours", ["127.0.0.1"], ["hospital1"])
    theirs = generate_credentials(tmp_path / "theirs", ["127.0.0.1"], ["hospital1"])
    model = tmp_path / "model.pt"
    model.write_bytes(checkpoint.read_bytes())
    assert "unsigned" in client("--model", model).get("/diagnose").text
    sign_checkpoint(model, ours.signing_key)
    assert "signed, but not verified" in client("--model", model).get("/diagnose").text
    page = client("--model", model, "--public-key", ours.signing_public_key).get("/diagnose").text
    assert "signature verified with" in page and "key fingerprint" in page
    from common.signing import SignatureError

    with pytest.raises(SignatureError):  # clafed serve refuses to start with a model its key did not sign
        client("--model", model, "--public-key", theirs.signing_public_key)
