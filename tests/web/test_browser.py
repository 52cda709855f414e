"""The three pages in a real browser (Chromium via Playwright): a case diagnosed by drawing its box
gets `clafed predict`'s probabilities; a site's results filter and open a case; the run monitor
follows a live `tiny` simulation round by round."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from common.cli import main
from common.labels import CLASSES
from common.serve_cli import build_app
from common.validation import load_cases
from common.web.access import TOKEN_ENV
from tests.sitegen import write_site
from tests.web.browser import browser_page, live_server, screenshot, wait_until
from tests.web.harness import serve_args

pytestmark = pytest.mark.slow
TOKEN = "browser-test-token-0123456789"


def test_diagnose_a_case_by_drawing_its_box(checkpoint, tmp_path, monkeypatch, capsys):
    case = load_cases(write_site(tmp_path / "site", {c: 1 for c in CLASSES}))[3]
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the token flow a server off loopback uses
    app, _ = build_app(serve_args("--model", checkpoint))
    with live_server(app) as base, browser_page() as page:
        assert page.goto(f"{base}/diagnose").status == 401
        page.goto(f"{base}/?token={TOKEN}")  # the printed link: sets the cookie, drops the token
        assert "token" not in page.url
        page.click("text=Diagnose")
        page.set_input_files("#bus-file", str(case.bus_path))
        wait_until(page, "document.getElementById('bus-source').textContent.includes('px')")
        page.set_input_files("#cdfi-file", str(case.cdfi_path))
        page.wait_for_selector("#diagnose:enabled")
        box = page.locator("#bus-canvas").bounding_box()
        page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.25 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.7 * box["width"], box["y"] + 0.8 * box["height"], steps=5)
        page.mouse.up()
        drawn = [int(v) for v in re.findall(r"\d+", page.text_content("#roi-text"))[:4]]
        assert drawn[2] > 30 and drawn[3] > 30  # about half of the 96 px image, dragged with the mouse
        page.click("#diagnose")
        page.wait_for_selector("#result:not([hidden])")
        with page.expect_download() as download:  # the JSON a user downloads
            page.click("#download-json")
        result = json.loads(open(download.value.path(), encoding="utf-8").read())
        assert result["roi"] == drawn and result["roi_source"] == "given"

        assert main(["predict", "--model", str(checkpoint), "--bus", str(case.bus_path), "--cdfi", str(case.cdfi_path),
                     "--roi", ",".join(map(str, drawn)), "--out", str(tmp_path / "predict"), "--json"]) == 0
        expected = json.loads(capsys.readouterr().out)
        np.testing.assert_allclose([result["probabilities"][c] for c in CLASSES],
                                   [expected["probabilities"][c] for c in CLASSES], atol=1e-6)
        assert page.text_content("#path") == expected["path"]
        shown = page.locator("#probabilities tbody td:nth-child(2)").all_text_contents()
        assert shown == [f"{expected['probabilities'][c]:.3f}" for c in CLASSES]

        first = page.get_attribute("#bus-heat", "src")
        page.check("#level-1")  # the second level on the path
        assert page.get_attribute("#bus-heat", "src") != first
        page.locator("#opacity").fill("0.3")
        assert page.evaluate("getComputedStyle(document.getElementById('cdfi-heat')).opacity") == "0.3"
        with page.expect_download() as download:
            page.click("#download-picture")
        assert open(download.value.path(), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        screenshot(page, tmp_path, "diagnose.png")


def test_site_results_filter_sort_and_open_a_case(evaluated_site, tmp_path):
    yaml, _, cases = evaluated_site
    app, _ = build_app(serve_args("--site", yaml))
    with live_server(app) as base, browser_page() as page:
        page.goto(f"{base}/site")
        page.click("text=run1")
        wait_until(page, f"document.querySelectorAll('#cases tbody tr').length === {len(cases)}")
        answer = page.evaluate("async () => (await fetch('/api/site/run1/cases')).json()")
        wrong = sum(c["correct"] is False for c in answer["cases"])
        page.select_option("#filter", "wrong")
        assert page.locator("#cases tbody tr").count() == wrong
        assert page.text_content("#count") == f"{wrong} of {len(cases)} cases"
        page.select_option("#filter", "class:metastatic")
        assert page.locator("#cases tbody tr").count() == sum(c.label == "metastatic" for c in cases)
        page.select_option("#filter", "all")
        page.click("th[data-key='p:metastatic']")
        values = [float(v) for v in page.locator("#cases tbody td:nth-child(7)").all_text_contents()]
        assert values == sorted(values)
        page.locator("#cases tbody tr").first.click()
        wait_until(page, "document.getElementById('case-picture').naturalWidth > 0")
        assert not page.locator("#case-view").is_hidden()
        screenshot(page, tmp_path, "site_results.png")


def test_the_run_monitor_follows_a_live_simulation(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "common.cli", "simulate", "--profile", "tiny", "--preset", "small",
               "--out", str(run), "--rounds", "1", "--shared-rounds", "0", "--localiser-rounds", "0",
               "--heatmaps", "0", "--bootstrap", "20"]
    log = open(tmp_path / "simulate.log", "w")
    simulation = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        app, _ = build_app(serve_args("--run", run))
        with live_server(app) as base, browser_page() as page:
            page.goto(f"{base}/run")
            rounds = lambda: int(page.text_content("#rounds"))  # noqa: E731
            first = wait_until(page, "Number(document.getElementById('rounds').textContent)", timeout=300)
            wait_until(page, f"Number(document.getElementById('rounds').textContent) > {first}", timeout=300)
            assert page.locator("#sites tbody tr").count() == 3
            assert page.locator("#charts svg").count() >= 1
            wait_until(page, "!document.getElementById('report-link').hidden", timeout=300)
            assert page.text_content("#status").startswith("finished") and rounds() == 3
            assert page.text_content("#problems") == "none"
            screenshot(page, tmp_path, "run_monitor.png")
        assert simulation.wait(timeout=120) == 0, (tmp_path / "simulate.log").read_text()[-3000:]
    finally:
        if simulation.poll() is None:
            simulation.kill()
        log.close()
