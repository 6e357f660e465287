"""The demo's handlers called directly on small images (no server, no browser)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio")

from demo import benchmarks  # noqa: E402
from demo.examples import example_rows  # noqa: E402
from demo.handlers import UPLOAD, Workbench, shrink_to  # noqa: E402
from demo.model_cache import ModelCache, catalogue  # noqa: E402
from demo.model_cards import model_cards  # noqa: E402
from demo.settings import Settings, load_settings  # noqa: E402
from demo.ui import user_errors  # noqa: E402
from eval.metrics import evaluate_pair  # noqa: E402
from sr.checkpoints import load_model, save_checkpoint  # noqa: E402
from sr.errors import (CheckpointError, ImageReadError, InputTooLargeError,  # noqa: E402
                       ScaleError, SRError)
from sr.inference import upscale  # noqa: E402
from sr.io import read_image, to_numpy  # noqa: E402
from sr.models import create_model  # noqa: E402
from sr.resize import imresize  # noqa: E402


def _photo(h=40, w=52, seed=0):
    """A smooth random RGB image: natural enough for metrics, small enough to be quick."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((3, h // 4 + 1, w // 4 + 1))
    x = torch.from_numpy(coarse).float()[None]
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[0]
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """An empty weights folder for the demo (the bundled one may hold trained files)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("SR_WEIGHTS_DIR", str(folder))
    return folder


@pytest.fixture
def wb(tmp_path, weights):
    return Workbench(Settings(work_dir=tmp_path / "work", results_dir=tmp_path / "results"))


def _espcn(folder, scale=2, seed=0):
    torch.manual_seed(seed)
    return save_checkpoint(create_model("espcn", scale), folder / f"espcn_x{scale}.safetensors")


def test_settings_from_environment():
    s = load_settings({"SR_DEMO_MAX_MP": "0.5", "SR_DEMO_QUEUE_SIZE": "3"})
    assert s.max_pixels == 500_000 and s.queue_size == 3 and s.model_cache == 4
    with pytest.raises(SRError, match="SR_DEMO_MAX_MP"):
        load_settings({"SR_DEMO_MAX_MP": "lots"})
    with pytest.raises(SRError, match="positive"):
        load_settings({"SR_DEMO_QUEUE_SIZE": "0"})


@pytest.mark.parametrize("scale", [2, 3])
def test_bicubic_run_matches_library_and_png(wb, scale):
    img = _photo()
    run = wb.upscale(img, "bicubic", scale)
    expected = upscale(create_model("bicubic", scale), img)
    assert run.sr.size == (img.width * scale, img.height * scale)
    assert np.array_equal(np.asarray(run.sr), np.asarray(expected))
    saved = Image.open(run.sr_path)
    assert saved.format == "PNG"
    assert np.array_equal(np.asarray(saved), np.asarray(expected))
    assert run.info["output_size"] == f"{img.width * scale}x{img.height * scale}"
    assert run.info["parameters"] == 0 and run.info["tiles"] >= 1


def test_alpha_and_16_bit_are_kept(wb, tmp_path):
    rgba = np.dstack([np.asarray(_photo()), np.linspace(0, 255, 52, dtype=np.uint8)[None].repeat(40, 0)])
    run = wb.upscale(Image.fromarray(rgba, "RGBA"), "bicubic", 2)
    assert run.sr.mode == "RGBA" and Image.open(run.sr_path).mode == "RGBA"
    deep = (np.asarray(_photo()).astype(np.uint16) * 257 + 7)
    path = tmp_path / "deep.png"
    from sr.io import from_numpy, save_image
    save_image(from_numpy(deep), path)
    run = wb.upscale(str(path), "bicubic", 2)
    back = to_numpy(read_image(run.sr_path))
    assert back.dtype == np.uint16 and back.shape == (80, 104, 3)
    assert np.array_equal(back, to_numpy(upscale(create_model("bicubic", 2), read_image(path))))


def test_bad_inputs_raise_one_line_errors(wb, tmp_path):
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError) as err:
        wb.upscale(str(bad), "bicubic", 2)
    assert "photo.png" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ImageReadError, match="upload"):
        wb.upscale(None, "bicubic", 2)
    with pytest.raises(ScaleError, match="x5"):
        wb.upscale(_photo(), "bicubic", 5)
    with pytest.raises(SRError, match="whole number"):
        wb.upscale(_photo(), "bicubic", "2.5")
    with pytest.raises(CheckpointError, match="unknown model"):
        wb.upscale(_photo(), "rcan", 4)  # no bundled weights in this test
    with pytest.raises(SRError, match="checkpoint"):
        wb.upscale(_photo(), UPLOAD, 2)
    assert len(wb.runs) == 0
    assert not any(wb.runs.root.iterdir()), "a failed run must not leave files behind"


def test_pixel_limit_refuses_or_downscales(tmp_path, weights):
    wb = Workbench(Settings(max_megapixels=0.001, work_dir=tmp_path))
    img = _photo(40, 52)  # 2080 px > 1000
    with pytest.raises(InputTooLargeError) as err:
        wb.upscale(img, "bicubic", 2)
    assert "0.001 MP" in str(err.value) and "downscale large inputs" in str(err.value)
    run = wb.upscale(img, "bicubic", 2, downscale_large=True)
    w, h = run.lr.size
    assert w * h <= 1000 and abs(w / h - 52 / 40) < 0.1
    assert "downscaled from 52x40" in run.info["note"]
    assert run.click_to_lr == pytest.approx((w / 52, h / 40))  # clicks are on the original
    corner = wb.crops(run.run_id, (51, 39), 8, None)[0][0]
    zoom = corner.width // 8
    assert np.array_equal(np.asarray(corner)[::zoom, ::zoom], np.asarray(run.lr)[-8:, -8:])


def test_shrink_keeps_mode_and_uses_matlab_bicubic():
    img = Image.fromarray(np.asarray(_photo(40, 40)))
    small = shrink_to(img, 400)
    assert small.size == (20, 20) and small.mode == "RGB"
    pixels = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    expected = imresize(pixels, size=(20, 20)).clamp(0, 1).mul(255).round().byte()
    assert np.abs(np.asarray(small).astype(int) - expected.permute(1, 2, 0).numpy()).max() <= 1


def test_ground_truth_mode_measures_against_the_upload(wb):
    hr = _photo(47, 50)
    run = wb.upscale(hr, "bicubic", 3, ground_truth=True)
    hr8 = torch.from_numpy(np.array(hr)).permute(2, 0, 1)[:, :45, :48]  # modcrop to x3
    assert np.array_equal(np.asarray(run.hr), hr8.permute(1, 2, 0).numpy())
    lr8 = imresize(hr8, scale=1 / 3)
    assert np.array_equal(np.asarray(run.lr), lr8.permute(1, 2, 0).numpy())
    expected = evaluate_pair(imresize(lr8, scale=3), hr8, 3)  # the tables' baseline
    assert run.info["metrics"]["bicubic"] == pytest.approx(expected)
    assert 20 < expected["psnr_y"] < 60
    assert run.sr.size == run.hr.size == (48, 45)
    with pytest.raises(ImageReadError, match="at least"):
        wb.upscale(_photo(12, 12), "bicubic", 3, ground_truth=True)


def test_crops_show_the_same_region(wb):
    img = _photo(40, 52)
    run = wb.upscale(img, "bicubic", 2, ground_truth=True)  # HR 52x40 -> LR 26x20
    views = wb.crops(run.run_id, (20, 10), 8, None)
    captions = [c for _, c in views]
    assert captions[0].startswith("LR input") and "HR original" in captions
    assert len({v.size for v, _ in views}) == 1
    # click (20, 10) on the 52x40 upload -> LR centre (10, 5) -> box x 6..14, y 1..9
    lr_view = np.asarray(views[0][0])
    zoom = lr_view.shape[1] // 8
    assert np.array_equal(lr_view[::zoom, ::zoom], np.asarray(run.lr)[1:9, 6:14])
    hr_view = np.asarray(views[-1][0])
    z = hr_view.shape[1] // 16
    assert np.array_equal(hr_view[::z, ::z], np.asarray(run.hr)[2:18, 12:28])
    corner = wb.crops(run.run_id, (10_000, 10_000), 8, None)  # clamped to the image
    assert np.array_equal(np.asarray(corner[0][0])[::zoom, ::zoom], np.asarray(run.lr)[-8:, -8:])
    with pytest.raises(SRError, match="Upscale"):
        wb.crops("no-such-run", None, 8, None)


def test_bundled_model_is_cached_and_compare_crop_matches(tmp_path, weights):
    _espcn(weights, 2)
    assert catalogue()["espcn"] == {2: weights / "espcn_x2.safetensors"}
    wb = Workbench(Settings(work_dir=tmp_path, memory_mb=1))  # tiny budget: several tiles
    img = _photo(40, 52)
    first = wb.upscale(img, "espcn", 2)
    calls = []
    again = wb.upscale(img, "espcn", 2, progress=lambda done, total: calls.append((done, total)))
    assert wb.models.loads == 2  # espcn and bicubic, each read once for two runs
    assert again.info["tiles"] > 1 and calls[-1] == (again.info["tiles"],) * 2
    assert np.array_equal(np.asarray(again.sr), np.asarray(first.sr))
    base = wb.upscale(img, "bicubic", 2)
    views = wb.crops(base.run_id, (40, 30), 12, "espcn")
    assert views[-1][1] == "espcn x2"
    z = np.asarray(views[-1][0]).shape[1] // 24
    # region: LR centre (40, 30) -> box x 34..46, y 24..36 -> SR x 68..92, y 48..72
    got = np.asarray(views[-1][0])[::z, ::z].astype(int)
    full = np.asarray(first.sr)[48:72, 68:92].astype(int)
    assert np.abs(got - full).max() <= 1  # bf16 autocast may round a tile differently

    gt = wb.upscale(img, "espcn", 2, ground_truth=True)
    hr8 = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    lr = imresize(hr8, scale=1 / 2).float() / 255
    net = load_model(weights / "espcn_x2.safetensors")
    expected = evaluate_pair(upscale(net, lr, precision="fp32"), hr8, 2)
    assert set(gt.info["metrics"]) == {"bicubic", "espcn"}
    assert gt.info["metrics"]["espcn"] == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, on the junk file
def test_uploaded_checkpoint(wb, tmp_path):
    path = _espcn(tmp_path, 3)
    run = wb.upscale(_photo(), UPLOAD, 3, checkpoint=str(path))
    assert run.sr.size == (156, 120) and run.info["arch"] == "espcn"
    assert wb.upscale(_photo(), UPLOAD, None, checkpoint=str(path)).scale == 3  # the file's
    with pytest.raises(ScaleError, match="x3 model"):
        wb.upscale(_photo(), UPLOAD, 2, checkpoint=str(path))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError):
        wb.upscale(_photo(), UPLOAD, 2, checkpoint=str(junk))


def test_model_cache_is_bounded(weights):
    cache = ModelCache(maxsize=2)
    a = cache.get("bicubic", 2)
    cache.get("bicubic", 3)
    assert cache.get("bicubic", 2) is a and cache.loads == 2
    cache.get("bicubic", 4)  # evicts x3, the least recently used
    cache.get("bicubic", 3)
    assert cache.loads == 4 and len(cache._models) == 2


def test_run_store_drops_old_runs_past_its_budget(tmp_path, weights):
    wb = Workbench(Settings(work_dir=tmp_path, results_mb=1))
    wb.runs.budget = 30_000  # a run of a 52x40 image at x2 holds ~25 kB of pixels
    first = wb.upscale(_photo(), "bicubic", 2)
    second = wb.upscale(_photo(seed=1), "bicubic", 2)
    assert len(wb.runs) == 1 and wb.runs.get(second.run_id) is second
    assert not first.sr_path.exists() and second.sr_path.exists()
    with pytest.raises(SRError):
        wb.runs.get(first.run_id)


def test_model_cards(weights):
    assert "No bundled weights" in model_cards()
    torch.manual_seed(0)
    save_checkpoint(create_model("espcn", 2), weights / "espcn_x2.safetensors",
                    metadata={"provenance": {"recipe": "espcn", "steps": 1000, "history": [{"steps": 500}],
                                             "data": {"hr_dirs": ["/data/T91", "/data/BSD200"], "images": 291}},
                              "eval": {"Set5": {"scale": 2, "psnr": 35.5, "ssim": 0.95},
                                       "Set14": {"x2": {"psnr_y": 31.25}}}})
    card = model_cards()
    params = sum(p.numel() for p in create_model("espcn", 2).parameters())
    assert "### espcn (x2)" in card and f"{params:,}" in card
    assert "| espcn | T91, BSD200 (291 images) | 1,500 in 2 runs |" in card  # no machine paths
    # An older run behind it recorded its own chain as one hand-written command.
    save_checkpoint(create_model("espcn", 3), weights / "espcn_x3.safetensors",
                    metadata={"provenance": {"steps": 1000, "command": "c", "history": [
                        {"steps": 500, "command": "a (200 steps), then b (300 steps)"}]}})
    assert "| 1,000 in the last of 3 runs |" in model_cards()
    assert "Set5 x2: 35.50 / 0.9500 (Y); Set14 x2: 31.25 (Y)" in card


def test_benchmark_results_table(tmp_path):
    empty = benchmarks.load_results(tmp_path)
    assert empty.empty and "No evaluation results" in benchmarks.results_note(empty, tmp_path)
    run = tmp_path / "run1"
    run.mkdir()
    (run / "summary.csv").write_text(
        "model,scale,dataset,psnr_y,ssim_y,params,seconds\n"
        "bicubic,4,Set5,28.4231,0.81044,0,0.01\nedsr_baseline,4,Set5,32.0912,0.89381,1517571,0.5\n"
        "bicubic,2,Set5,33.66,0.9299,0,0.01\nbicubic,2,Set14,30.24,0.8688,0,0.01\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.csv").write_text("not,a\n\"table")
    results = benchmarks.load_results(tmp_path)
    table = benchmarks.results_table(results)
    # papers' set order (Set5 before Set14), then scale, then best PSNR first
    assert list(zip(table["dataset"], table["scale"], table["model"])) == [
        ("Set5", 2, "bicubic"), ("Set5", 4, "edsr_baseline"), ("Set5", 4, "bicubic"),
        ("Set14", 2, "bicubic")]
    assert table["psnr_y"].tolist()[1:3] == [32.09, 28.42]
    frame = benchmarks.plot_frame(results, "Set5", 4)
    assert sorted(frame["model"]) == ["bicubic", "edsr_baseline"]
    assert frame["params"].tolist() == [0, 1517571]


def test_user_errors_become_one_line_gradio_errors():
    @user_errors
    def failing(kind):
        if kind == "sr":
            raise ScaleError("espcn supports x2\n  not x5")
        raise RuntimeError("boom")

    with pytest.raises(gr.Error) as err:
        failing("sr")
    assert err.value.message == "espcn supports x2 not x5"
    with pytest.raises(gr.Error, match="unexpected error \\(RuntimeError\\)"):
        failing("other")


def test_evaluate_on_a_local_benchmark_folder(tmp_path, monkeypatch, weights):
    monkeypatch.setenv("SR_CACHE_DIR", str(tmp_path / "cache"))
    hr_dir = tmp_path / "data" / "Tiny" / "HR"
    hr_dir.mkdir(parents=True)
    for i in range(2):
        _photo(30, 36, seed=i).save(hr_dir / f"img{i}.png")
    bicubic = create_model("bicubic", 2)
    seen = []
    text, table = benchmarks.evaluate_model("bicubic", bicubic, "Tiny", 2, tmp_path / "data",
                                            lambda done, total, desc: seen.append((done, total)))
    hr8 = torch.from_numpy(np.array(_photo(30, 36, seed=0))).permute(2, 0, 1)
    expected = evaluate_pair(imresize(imresize(hr8, scale=1 / 2), scale=2), hr8, 2)
    assert table["image"].tolist() == ["img0", "img1"]
    assert table["psnr_y"][0] == round(expected["psnr_y"], 2)
    assert "Tiny (2 images)" in text and "PSNR-Y" in text and seen[-1] == (2, 2)
    with pytest.raises(SRError):
        benchmarks.evaluate_model("bicubic", bicubic, "", 2, tmp_path / "data")


def test_examples_are_generated_once(tmp_path):
    rows, labels = example_rows(tmp_path)
    assert len(rows) == len(labels) == 4
    images = {Path(p).name: Image.open(p) for p, _ in rows}
    assert images["astronaut.png"].size == (256, 256) and images["logo_rgba.png"].mode == "RGBA"
    assert [gt for _, gt in rows] == [True, False, False, False]
    stamp = Path(rows[0][0]).stat().st_mtime_ns
    example_rows(tmp_path)
    assert Path(rows[0][0]).stat().st_mtime_ns == stamp


def test_run_folders_of_dead_processes_are_removed(tmp_path, weights):
    stale = tmp_path / "runs-999999999-abc"  # no such process
    stale.mkdir()
    other = tmp_path / "runs-1-xyz"  # pid 1 is alive: not ours to delete
    other.mkdir()
    Workbench(Settings(work_dir=tmp_path))
    assert not stale.exists() and other.exists()
