"""End to end: `python app.py` on 127.0.0.1, driven through gradio_client's `/upscale` API."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from sr.checkpoints import load_model, save_checkpoint  # noqa: E402
from sr.inference import upscale  # noqa: E402
from sr.io import read_image, save_image, to_numpy  # noqa: E402
from sr.models import create_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"app.py did not answer on {url} within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The real entry point in a subprocess, with one random-weights 'bundled' checkpoint."""
    tmp = tmp_path_factory.mktemp("demo_e2e")
    weights = tmp / "weights"
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("espcn", 2), weights / "espcn_x2.safetensors")
    port = _free_port()
    env = dict(os.environ, SR_WEIGHTS_DIR=str(weights), SR_DEMO_WORK_DIR=str(tmp / "work"),
               SR_DEMO_RESULTS_DIR=str(tmp / "results"), SR_DEMO_MAX_MP="0.05",
               GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp / "gradio"))
    log = tmp / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, proc, log)
        client = Client(url, verbose=False, download_files=str(tmp / "downloads"))
        yield {"client": client, "ckpt": ckpt, "tmp": tmp, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _image(tmp: Path, name: str, h=30, w=44, channels=3, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    return save_image(Image.fromarray(pixels), tmp / name)


def _predict(app, path, model, scale):
    return app["client"].predict(handle_file(str(path)), model, scale, api_name="/upscale")


def test_api_takes_image_model_scale_first(app):
    info = app["client"].view_api(print_info=False, return_format="dict")
    params = info["named_endpoints"]["/upscale"]["parameters"]
    assert [p["parameter_name"] for p in params[:3]] == ["image", "model", "scale"]
    assert all(p["parameter_has_default"] for p in params[1:])


@pytest.mark.parametrize("scale", [2, 3])
def test_bicubic_result_is_lossless_and_equals_the_library(app, scale):
    src = _image(app["tmp"], f"rgb_{scale}.png", seed=scale)
    sr_file, (bic_file, slider_sr), _, info = _predict(app, src, "bicubic", scale)
    assert Path(sr_file).suffix == ".png" and Image.open(sr_file).format == "PNG"
    got = to_numpy(read_image(sr_file))
    expected = to_numpy(upscale(create_model("bicubic", scale), read_image(src)))
    assert got.shape == (30 * scale, 44 * scale, 3)
    assert np.array_equal(got, expected)
    assert np.array_equal(to_numpy(read_image(slider_sr)), expected)  # the slider is PNG too
    assert Image.open(bic_file).format == "PNG"
    assert info["output_size"] == f"{44 * scale}x{30 * scale}" and info["model"] == "bicubic"


def test_bundled_checkpoint_equals_the_library(app):
    src = _image(app["tmp"], "rgb_espcn.png", seed=7)
    sr_file, _, text, info = _predict(app, src, "espcn", 2)
    expected = upscale(load_model(app["ckpt"]), read_image(src))
    assert np.array_equal(to_numpy(read_image(sr_file)), to_numpy(expected))
    assert info["arch"] == "espcn" and info["parameters"] > 0 and "espcn" in text


def test_alpha_survives_the_round_trip(app):
    src = _image(app["tmp"], "rgba.png", channels=4, seed=3)
    sr_file, *_ = _predict(app, src, "bicubic", 2)
    got = read_image(sr_file)
    assert got.mode == "RGBA"
    assert np.array_equal(to_numpy(got), to_numpy(upscale(create_model("bicubic", 2), read_image(src))))


def test_errors_are_one_line_and_the_app_keeps_serving(app):
    junk = app["tmp"] / "holiday.png"
    junk.write_bytes(b"this is not an image")
    big = _image(app["tmp"], "big.png", h=250, w=250)  # 0.0625 MP > the 0.05 MP limit
    good = _image(app["tmp"], "good.png", seed=11)
    log_start = len(app["log"].read_text())
    cases = [(junk, "bicubic", 2, "holiday.png is not a"), (good, "bicubic", 5, "not x5"),
             (good, "rcan", 4, "unknown model"), (big, "bicubic", 2, "limit of 0.05 MP")]
    for path, model, scale, needle in cases:
        with pytest.raises(gradio_client.exceptions.AppError) as err:
            _predict(app, path, model, scale)
        message = str(err.value)
        assert needle in message and "\n" not in message, message
        assert str(app["tmp"]) not in message  # no server paths, just the user's file name
    sr_file, *_ = _predict(app, good, "bicubic", 2)
    assert Image.open(sr_file).size == (88, 60)
    assert "Traceback" not in app["log"].read_text()[log_start:]  # user errors are not crashes


def test_uploaded_checkpoint_is_used_and_a_bad_one_is_refused(app):
    client = app["client"]
    src = _image(app["tmp"], "rgb_upload.png", seed=5)
    sr_file, _, _, info = client.predict(handle_file(str(src)), "upload", 2, False, False,
                                         handle_file(str(app["ckpt"])), api_name="/upscale")
    expected = upscale(load_model(app["ckpt"]), read_image(src))
    assert np.array_equal(to_numpy(read_image(sr_file)), to_numpy(expected))
    assert info["model"] == "espcn_x2.safetensors"
    junk = app["tmp"] / "weights.pth"
    junk.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        client.predict(handle_file(str(src)), "upload", 2, False, False, handle_file(str(junk)),
                       api_name="/upscale")
    message = str(err.value)
    assert "weights.pth" in message and "\n" not in message and str(app["tmp"]) not in message
