"""edgepipe compare: recipes x targets in one run, report.html in a real browser, report
rebuilding, config files, progress."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline import api
from pipeline.cli.commands import main

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """The demo model, three recipes, on the host and an emulated Cortex-M4."""
    out = tmp_path_factory.mktemp("compare")
    outcome = CliRunner().invoke(main, [
        "compare", str(api.sample_path("reference_cnn.keras")), "--calib", str(api.sample_path("mnist", "calib.npz")),
        "--eval", str(api.sample_path("mnist", "eval.npz")), "--recipes", "int8,int16x8,float16",
        "--calibration", "minmax,robust", "--targets", "host,cortex-m4", "--out", str(out), "--runs", "5", "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    return json.loads(outcome.stdout), out, outcome.stderr


def test_every_candidate_on_every_target_with_recommendations(compared):
    report, out, _ = compared
    names = [row["name"] for row in report["candidates"]]
    assert names == ["int8/minmax", "int8/robust", "int16x8", "float16"]
    cells = report["comparison"]["matrix"]
    assert len(cells) == 8 and {c["target"] for c in cells} == {"host", "cortex-m4"}
    # TFLM cannot run float16 weights: a cell with the reason, not a failure of the command.
    problem = next(c for c in cells if c["candidate"] == "float16" and c["target"] == "cortex-m4")
    assert problem["problem"].startswith("target cortex-m4 cannot run model_float16.tflite: the float16 weights of")
    assert "DEQUANTIZE" in problem["problem"] and "dequantize_common.cc" not in problem["problem"]
    mcu = next(c for c in cells if c["candidate"] == "int8/minmax" and c["target"] == "cortex-m4")
    assert mcu["latency_method"] == "estimated" and mcu["fits"] is True and mcu["ram_bytes"] > 0 and mcu["agreement"] > 0.98
    host = next(c for c in cells if c["candidate"] == "int8/minmax" and c["target"] == "host")
    assert host["latency_method"] == "measured" and host["energy_mj"] is None
    recommendation = report["comparison"]["recommendations"]["cortex-m4"]
    assert recommendation["candidate"].startswith("int8") and "fits with" in recommendation["reason"]
    assert report["chosen"] == recommendation["candidate"]
    assert "float16" not in report["comparison"]["fits"]["cortex-m4"]
    assert set(report["comparison"]["pareto"]) == {"host", "cortex-m4"}
    assert {p.name for p in out.iterdir()} >= {"model_int8_minmax.tflite", "model_int8_robust.tflite",
                                               "model_int16x8.tflite", "model_float16.tflite", "report.html",
                                               "edgepipe.toml"}


def test_report_html_is_self_contained(compared):
    _, out, _ = compared
    page = (out / "report.html").read_text()
    images = re.findall(r"<img [^>]*src='([^']+)'", page)
    assert len(images) >= 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"https?://", page), "an external URL"
    references = re.findall(r"(?:src|href)\s*=\s*['\"]([^'\"]*)", page) + re.findall(r"url\(([^)]*)\)", page)
    assert all(ref.startswith("data:") for ref in references), references
    assert "<script" not in page and "<link" not in page


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make test installs it)")
def test_report_html_renders_in_chromium(compared, tmp_path):
    from playwright.sync_api import sync_playwright

    _, out, _ = compared
    shot = tmp_path / "report.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems, requests = [], []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        loaded = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert problems == [] and len(loaded) >= 2 and all(loaded)
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape[1] == 1280 and pixels.std() > 20  # not blank: text, tables and plots
    if os.environ.get("EDGEPIPE_UPDATE_DOCS"):  # maintainers: refresh the README's screenshot
        shutil.copy(shot, DOCS / "compare-report.png")


def test_report_rebuilds_md_and_html_from_json(compared, tmp_path):
    _, out, _ = compared
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = (copy / "report.md").read_text()
    (copy / "report.md").unlink()
    (copy / "report.html").unlink()
    outcome = CliRunner().invoke(main, ["report", str(copy)])
    assert outcome.exit_code == 0, outcome.stderr
    assert (copy / "report.md").read_text() == before and (copy / "report.html").exists()
    bad = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "no readable report.json" in bad.stderr
    report = json.loads((copy / "report.json").read_text())
    del report["comparison"]["matrix"][0]["bytes"]
    (copy / "report.json").write_text(json.dumps(report))
    lacking = CliRunner().invoke(main, ["report", str(copy)])
    assert lacking.exit_code == 2 and "Traceback" not in lacking.output
    assert "lacks the key 'comparison.matrix[0].bytes'" in lacking.stderr
    assert f"`edgepipe rerun {copy / 'report.json'} --out {copy}`" in lacking.stderr
    assert (copy / "report.md").read_text() == before


def test_the_written_config_runs_again_and_options_override_it(compared, tmp_path):
    report, out, _ = compared
    again = CliRunner().invoke(main, ["compare", "-c", str(out / "edgepipe.toml"), "--out", str(tmp_path),
                                      "--targets", "host", "--recipes", "int8", "--runs", "3", "--json"])
    assert again.exit_code == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert [row["name"] for row in rerun["candidates"]] == ["int8/minmax", "int8/robust"]  # calibrations from the file
    first = {row["name"]: row["artifact"]["sha256"] for row in report["candidates"]}
    assert all(first[row["name"]] == row["artifact"]["sha256"] for row in rerun["candidates"])
    assert rerun["config"]["run"]["runs"] == 3 and rerun["config"]["targets"] == ["host"]


@pytest.mark.quick
def test_a_config_file_for_convert(tmp_path, tiny_keras, small_npz):
    (tmp_path / "edgepipe.toml").write_text(f'model = "{tiny_keras}"\ncalib = "{small_npz}"\nrecipe = "float16"\n'
                                            '[run]\nruns = 2\n')
    outcome = CliRunner().invoke(main, ["convert", "-c", str(tmp_path / "edgepipe.toml"), "--out", str(tmp_path / "o"),
                                        "--json"])
    assert outcome.exit_code == 0, outcome.stderr
    assert json.loads(outcome.stdout)["recipe"] == "float16"
    bad = CliRunner().invoke(main, ["convert", "-c", str(tmp_path / "edgepipe.toml"), "--calib-samples", "0"])
    assert bad.exit_code == 2
    (tmp_path / "broken.toml").write_text("model = \n")
    broken = CliRunner().invoke(main, ["convert", "-c", str(tmp_path / "broken.toml")])
    assert broken.exit_code == 2 and "cannot read the config file" in broken.stderr


def test_progress_is_plain_lines_off_a_terminal_and_silent_with_q(compared, tiny_keras, small_npz, tmp_path):
    _, _, stderr = compared
    assert "host: evaluating: 1500/1500 (100%)" in stderr
    assert re.search(r"TFLM: evaluating in \d worker\(s\): 1500/1500", stderr)
    assert "candidates on targets: 4/4 (100%)" in stderr  # the host ran in verify
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "-q", "compare", str(tiny_keras), "--calib", str(small_npz),
                           "--recipes", "int8,float16", "--out", str(tmp_path), "--runs", "2", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stderr == "" and json.loads(done.stdout)["schema"] == 2
