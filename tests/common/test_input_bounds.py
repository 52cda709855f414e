"""Inputs are bounded and checked before they can cost memory or a run."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from common.checkpoint import checkpoint_payload, load_checkpoint, save_checkpoint
from common.cli import main
from common.config import get_profile
from common.imaging import ImageError, read_image
from common.model import CLAHDM
from common.validation import validate_manifest
from tests.sitegen import write_site


def png_claiming(path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height (a decompression bomb's signature)."""
    ok, data = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(data.tobytes())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def test_a_huge_image_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    png_claiming(bomb, 20000, 20000)
    with pytest.raises(ImageError, match="image too large.*400,000,000 pixels.*max_image_pixels"):
        read_image(bomb)
    png_claiming(bomb, 9000, 9000)  # under Pillow's own alarm, over ours
    with pytest.raises(ImageError, match="image too large.*9000x9000 px"):
        read_image(bomb)


def test_validate_reports_the_bomb_nan_roi_and_an_empty_manifest(tmp_path, capsys):
    manifest = write_site(tmp_path / "site", {"reactive": 2})
    table = pd.read_csv(manifest, dtype=str)
    png_claiming(manifest.parent / table.loc[0, "bus_path"], 20000, 20000)
    table.loc[1, "roi_w"] = "nan"
    table.to_csv(manifest, index=False)
    problems = [str(p) for p in validate_manifest(manifest)]
    assert any("image too large" in p and table.loc[0, "case_id"] in p for p in problems), problems
    assert any("not four finite numbers" in p and table.loc[1, "case_id"] in p for p in problems), problems
    table.iloc[:0].to_csv(manifest, index=False)
    assert main(["validate", str(manifest)]) == 1
    assert "lists no cases" in capsys.readouterr().out


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused_clearly(tmp_path):
    profile = get_profile("tiny")
    payload = checkpoint_payload(CLAHDM(profile.model), profile.data)
    payload["model_config"]["backbone"] = "resnet18"
    torch.save(payload, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt: its weights do not fit the resnet18 CLA-HDM"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_predict_verifies_the_signature_when_given_a_key(tmp_path, capsys):
    from common.signing import sign_checkpoint
    from server.certs import generate_credentials

    creds = generate_credentials(tmp_path / "creds", ["127.0.0.1"], ["h1"])
    profile = get_profile("tiny")
    model = tmp_path / "model.pt"
    save_checkpoint(model, CLAHDM(profile.model), profile.data)
    site = write_site(tmp_path / "site", {"reactive": 1})
    case = pd.read_csv(site).iloc[0]
    images = ["--bus", str(site.parent / case["bus_path"]), "--cdfi", str(site.parent / case["cdfi_path"])]
    assert main(["predict", "--model", str(model), *images, "--out", str(tmp_path / "o1")]) == 0
    assert "is unsigned" in capsys.readouterr().err
    sign_checkpoint(model, creds.signing_key)
    key = ["--public-key", str(creds.signing_public_key)]
    assert main(["predict", "--model", str(model), *images, "--out", str(tmp_path / "o2"), *key]) == 0
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    model.write_bytes(bytes(data))
    assert main(["predict", "--model", str(model), *images, "--out", str(tmp_path / "o3"), *key]) == 2
    assert "does not match" in capsys.readouterr().err


def test_a_site_applies_its_own_minimum_image_size_when_it_loads(tmp_path):
    import yaml

    from common.manifest import ManifestError
    from common.site import SiteData, load_site_config

    manifest = write_site(tmp_path / "site", {"reactive": 2})  # 96 px images
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"name": "h1", "manifest": str(manifest), "min_image_size": 128}))
    with pytest.raises(ManifestError, match="image too small.*minimum 128 px"):
        SiteData.load(load_site_config(path))
    assert main(["validate", str(path)]) == 1
