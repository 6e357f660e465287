"""The demo in a real browser (headless Chromium via Playwright): upload, run, click, crops.

Screenshots go to test-artifacts/ (git-ignored). Chromium is Debian's package
(`apt-get install chromium`); Playwright's own browser download is not used. Without
Chromium or Playwright the test is skipped, except in CI (CI=true), where it fails.
"""
import os
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(reason + " -- required in CI")
    pytest.skip(reason)


def _chromium() -> str:
    for candidate in (os.environ.get("SR_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    _unavailable("Chromium not found (apt-get install chromium, or set SR_CHROMIUM)")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements-test.txt)")
    executable = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """The app served in this process on a free loopback port, with no bundled weights."""
    pytest.importorskip("gradio")
    from demo.settings import Settings
    from demo.ui import build_demo, launch

    tmp = tmp_path_factory.mktemp("demo_browser")
    saved = os.environ.get("SR_WEIGHTS_DIR")
    os.environ["SR_WEIGHTS_DIR"] = str(tmp / "weights")
    demo = build_demo(Settings(work_dir=tmp / "work", results_dir=tmp / "results"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
               quiet=True)
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        if saved is None:
            os.environ.pop("SR_WEIGHTS_DIR", None)
        else:
            os.environ["SR_WEIGHTS_DIR"] = saved


@pytest.fixture
def photo(tmp_path) -> Path:
    import skimage.data

    path = tmp_path / "chelsea.png"
    Image.fromarray(np.ascontiguousarray(skimage.data.chelsea()[::2, ::2])).save(path)
    return path


def _settled(page, selector: str) -> None:
    """Wait until every image under `selector` has finished loading (before screenshots)."""
    page.wait_for_function(
        "(sel) => [...document.querySelectorAll(sel + ' img')]"
        ".every(im => im.complete && im.naturalWidth > 0)", arg=selector)


def test_upload_run_and_inspect_crops(browser, url, photo):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) else None)
    try:
        page.goto(url, wait_until="load")
        page.wait_for_selector("#run")
        page.locator("#input-image input[type=file]").set_input_files(str(photo))
        page.wait_for_selector("#input-image img")
        page.click("#run")
        page.wait_for_selector("#result img")
        page.wait_for_function(  # the download appears with the result
            "document.querySelector('#download') && "
            "document.querySelector('#download').innerText.includes('.png')")
        assert "226x150" in page.inner_text("#run-info")  # the input size, in the run info
        assert "904x600" in page.inner_text("#run-info")  # x4, the default scale
        _settled(page, "#result")
        page.screenshot(path=str(ARTIFACTS / "demo_result.png"), full_page=True)

        page.wait_for_function("document.querySelectorAll('#crops img').length >= 2")
        centred = page.inner_text("#crops")  # after a run: the middle of the image
        assert "LR input (89, 51)" in centred and "bicubic x4" in centred
        image = page.locator("#input-image img").first
        origins, previous = [], "(89, 51)"
        for fraction in (0.25, 0.75):  # top-left, then bottom-right quarter
            _settled(page, "#input-image")
            box = image.bounding_box()  # measured now: the layout may have moved since
            image.click(position={"x": box["width"] * fraction, "y": box["height"] * fraction})
            previous = page.wait_for_function(
                "(p) => { const m = document.querySelector('#crops').innerText"
                ".match(/LR input (\\(\\d+, \\d+\\))/); return m && m[1] !== p && m[1]; }",
                arg=previous).json_value()
            origins.append(tuple(int(v) for v in re.findall(r"\d+", previous)))
        # a 48-px crop centred on the click: (56, 37) -> (32, 13); (169, 112) -> (145, 88)
        assert [(abs(x - ex) <= 1 and abs(y - ey) <= 1) for (x, y), (ex, ey)
                in zip(origins, [(32, 13), (145, 88)])] == [True, True], origins
        _settled(page, "#crops")
        page.screenshot(path=str(ARTIFACTS / "demo_crops.png"), full_page=True)

        page.get_by_label("Treat my upload as the high-resolution original").check()
        page.click("#run")
        page.wait_for_function(
            "document.querySelector('#run-info').innerText.includes('PSNR-Y')")
        page.wait_for_function("document.querySelector('#crops').innerText.includes('HR original')")
        _settled(page, "#crops")
        page.screenshot(path=str(ARTIFACTS / "demo_ground_truth.png"), full_page=True)

        before = page.locator("#input-image img").first.get_attribute("src")
        page.get_by_role("button", name="coffee").click()  # an example replaces the input
        page.wait_for_function(
            "(s) => document.querySelector('#input-image img').getAttribute('src') !== s",
            arg=before)
        page.wait_for_function("document.querySelectorAll('#crops img').length === 0")

        page.get_by_role("tab", name="Models").click()
        page.wait_for_selector("text=No bundled weights")
        page.get_by_role("tab", name="Benchmarks").click()
        page.wait_for_selector("text=No evaluation results shipped yet")
        page.screenshot(path=str(ARTIFACTS / "demo_benchmarks.png"), full_page=True)
    finally:
        page.close()
    assert outside == [], f"the page fetched outside resources: {outside[:5]}"
