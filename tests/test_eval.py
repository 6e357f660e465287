"""eval: benchmark sets, the runner, its cache, tables and CLI."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from eval import evaluate
from eval.__main__ import main as cli_main
from eval.datasets import DATASETS, load_benchmark, resolve_name
from eval.published_bicubic import LABEL as PUBLISHED_LABEL
from eval.published_bicubic import published_bicubic_row
from eval.tables import MISSING, paper_table, summarize, to_markdown
from sr.errors import DatasetError
from sr.resize import imresize

# Bicubic row of the SR literature (VDSR onwards), Y channel: (PSNR, SSIM).
PUBLISHED_BICUBIC = {
    ("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682), ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688), ("Set14", 3): (27.55, 0.7742), ("Set14", 4): (26.00, 0.7027),
}
# The same row measured with the protocol (EVAL_PROTOCOL.md: RGB LR, bicubic on RGB,
# Y of R = G = B for the grayscale `bridge`), which is how EDSR/RCAN/BasicSR-era papers
# measure their models. It is 0.01 dB above the published Set5 row and ~0.09 dB above
# the Set14 row: the published row comes from the older SRCNN-era pipeline (see
# eval/published_bicubic.py and test_published_bicubic_row_reproduced), not from this protocol.
PROTOCOL_BICUBIC = {
    ("Set5", 2): (33.6734, 0.93029), ("Set5", 3): (30.4033, 0.86891), ("Set5", 4): (28.4290, 0.81114),
    ("Set14", 2): (30.3246, 0.86985), ("Set14", 3): (27.6311, 0.77588), ("Set14", 4): (26.0884, 0.70480),
}


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture()
def tiny_root(tmp_path):
    """A custom set 'Tiny': one RGB image and one grayscale image, sizes not divisible by 3 or 4."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    smooth = np.kron(rng.integers(0, 256, (9, 10, 3), dtype=np.uint8), np.ones((5, 5, 1), np.uint8))
    _png(root / "Tiny" / "HR" / "a.png", smooth[:43, :47])
    _png(root / "Tiny" / "HR" / "b.png", rng.integers(0, 256, (38, 41), dtype=np.uint8))
    return root


def _run(models, root, tmp_path, scales=(2,), **kw):
    kw.setdefault("cache_dir", tmp_path / "cache")
    return evaluate(models, ["Tiny"], list(scales), data_root=root, progress=False, **kw)


class Counting(nn.Module):
    """Bicubic by float imresize, counting its calls; `fail_on_width` makes it raise."""

    def __init__(self, scale=2, fail_on_width=None):
        super().__init__()
        self.scale, self.arch, self.calls, self.fail_on_width = scale, "counting", 0, fail_on_width
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x):
        # Count images, not the engine's 8x8 footprint probe or the meta-device FLOP count.
        if x.device.type != "meta" and min(x.shape[-2:]) > 8:
            self.calls += 1
        if x.shape[-1] == self.fail_on_width:
            raise RuntimeError("boom on this image")
        return imresize(x, scale=self.scale) * self.gain


# ------------------------------------------------------------------ published numbers

@pytest.fixture(scope="module")
def bicubic_set5_set14(benchmarks_dir, tmp_path_factory):
    df = evaluate(["bicubic"], ["Set5", "Set14"], [2, 3, 4], data_root=benchmarks_dir,
                  cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    return summarize(df).set_index(["dataset", "scale"])


@pytest.mark.parametrize("key", sorted(PROTOCOL_BICUBIC))
def test_bicubic_row_protocol_values(bicubic_set5_set14, key):
    row = bicubic_set5_set14.loc[key]
    assert row["lr_source"] == "provided" and row["failed"] == 0
    p, s = PROTOCOL_BICUBIC[key]
    assert row["psnr_y"] == pytest.approx(p, abs=1e-3)
    assert row["ssim_y"] == pytest.approx(s, abs=1e-4)


@pytest.mark.parametrize("key", sorted(PUBLISHED_BICUBIC))
def test_bicubic_row_versus_published(bicubic_set5_set14, key):
    """Protocol minus published: Set5 within 0.015 dB / 0.0008; Set14 is higher by the
    grayscale `bridge` convention alone (1.32 dB on one image of 14), and matches the
    published row within 0.015 dB once that is accounted for."""
    row = bicubic_set5_set14.loc[key]
    p, s = PUBLISHED_BICUBIC[key]
    bridge_shift = 0.0
    if key[0] == "Set14":
        # Published: bridge's gray value used as Y (full range); protocol: Y of R = G = B
        # (range 16-235), which scales the error by 219/255.
        bridge_shift = 20 * math.log10(255 / 219) / 14
    assert row["psnr_y"] - bridge_shift == pytest.approx(p, abs=0.015)
    if key[0] == "Set5":
        assert row["ssim_y"] == pytest.approx(s, abs=8e-4)


@pytest.fixture(scope="module")
def published_row(benchmarks_dir):
    df = published_bicubic_row(["Set5", "Set14"], [2, 3, 4], data_root=benchmarks_dir)
    return summarize(df).set_index(["dataset", "scale"])


@pytest.mark.parametrize("key", sorted(PUBLISHED_BICUBIC))
def test_published_bicubic_row_reproduced(published_row, key):
    """Acceptance: all 12 published bicubic values (Set5/Set14, x2/x3/x4) within 0.01 dB
    and 0.0005, from the SRCNN-era pipeline built on this project's resize and metric."""
    row = published_row.loc[key]
    p, s = PUBLISHED_BICUBIC[key]
    assert row["model"] == PUBLISHED_LABEL and row["failed"] == 0
    assert row["psnr_y"] == pytest.approx(p, abs=0.01)
    assert row["ssim_y"] == pytest.approx(s, abs=5e-4)


def test_cli_published_bicubic_row(benchmarks_dir, tmp_path, capsys):
    code = cli_main(["--published-bicubic", "--models", "bicubic", "--datasets", "Set5", "--scales", "4",
                     "--data-root", str(benchmarks_dir), "--out", str(tmp_path / "out"),
                     "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert code == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("model")
    assert summary.loc[PUBLISHED_LABEL, "psnr_y"] == pytest.approx(28.42, abs=0.01)
    assert summary.loc["bicubic", "psnr_y"] == pytest.approx(PROTOCOL_BICUBIC[("Set5", 4)][0], abs=1e-3)
    assert "28.42 / 0.8102" in capsys.readouterr().out


def test_cli_needs_models_or_published_row(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--datasets", "Set5"])
    assert "--models" in capsys.readouterr().err


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_generated_lr_equals_provided_lr(benchmarks_dir, scale):
    bench = load_benchmark("Set14", scale, benchmarks_dir)
    for path in bench.hr_paths[:4] + [bench.hr_dir / "bridge.png"]:
        item = bench.load(path)
        assert item.lr_source == "provided"
        assert torch.equal(imresize(item.hr, scale=1 / scale), item.lr), path.name


def test_b100_urban100_have_no_lr_files_and_generate(benchmarks_dir):
    bench = load_benchmark("BSD100", 4, benchmarks_dir)
    assert bench.name == "B100" and len(bench) == 100
    item = bench.load(bench.hr_paths[0])
    assert item.lr_source == "generated"
    assert tuple(item.lr.shape[-2:]) == (item.hr.shape[-2] // 4, item.hr.shape[-1] // 4)


# ------------------------------------------------------------------ datasets and bad input

def test_registry_and_aliases(tmp_path):
    assert {"Set5", "Set14", "B100", "Urban100", "Manga109", "DIV2K_valid"} <= set(DATASETS)
    assert resolve_name("bsd100") == "B100"
    assert resolve_name("DIV2K") == "DIV2K_valid"
    assert resolve_name("urban100") == "Urban100"


def test_unknown_dataset_name(tiny_root, tmp_path):
    with pytest.raises(DatasetError, match=r"unknown dataset 'Set6'.*Set5"):
        evaluate(["bicubic"], ["Set6"], [2], data_root=tiny_root, cache_dir=tmp_path, progress=False)


def test_missing_dataset_folder_names_the_folder(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DatasetError) as err:
        evaluate(["bicubic"], ["Set5"], [2], data_root=root, cache_dir=tmp_path, progress=False)
    assert str(root / "Set5" / "HR") in str(err.value)
    assert "--data-root" in str(err.value)


def test_data_root_from_environment(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SR_DATA_ROOT", str(tiny_root))
    df = evaluate(["bicubic"], ["Tiny"], [2], cache_dir=tmp_path, progress=False)
    assert len(df) == 2 and (df["error"] == "").all()


def test_lr_size_mismatch_falls_back_to_generated(tiny_root, tmp_path):
    lr_dir = tiny_root / "Tiny" / "LR_bicubic" / "X2"
    _png(lr_dir / "ax2.png", np.zeros((10, 10, 3), np.uint8))           # wrong size
    _png(lr_dir / "bx2.png", np.zeros((19, 20), np.uint8))              # right size, all black
    with pytest.warns(UserWarning, match=r"ax2.png is 10x10, expected 23x21"):
        df = _run(["bicubic"], tiny_root, tmp_path).set_index("image")
    assert df.loc["a", "lr_source"] == "generated"
    assert df.loc["b", "lr_source"] == "provided"
    assert df.loc["b", "psnr_y"] < 15  # the (black) provided LR was really used
    assert df.loc["a", "psnr_y"] > 20


def test_grayscale_image_is_r_equals_g_equals_b(tiny_root, tmp_path):
    item = load_benchmark("Tiny", 2, tiny_root).load(tiny_root / "Tiny" / "HR" / "b.png")
    assert item.grayscale and item.hr.shape[0] == 3
    assert torch.equal(item.hr[0], item.hr[1]) and torch.equal(item.hr[1], item.hr[2])
    assert tuple(item.hr.shape[-2:]) == (38, 40)  # modcropped


def test_checkpoint_with_another_scale_gives_error_rows(tiny_root, tmp_path):
    from sr.checkpoints import save_checkpoint
    from sr.models import create_model

    path = save_checkpoint(create_model("espcn", 3), tmp_path / "espcn_x3.safetensors")
    df = _run([str(path)], tiny_root, tmp_path, scales=(2, 3))
    bad, good = df[df["scale"] == 2], df[df["scale"] == 3]
    assert len(bad) == 2 and bad["psnr_y"].isna().all()
    assert bad["error"].str.contains("x3").all()
    assert (good["error"] == "").all() and good["psnr_y"].notna().all()
    assert (df["model"] == "espcn_x3").all()
    # A model object with a fixed scale behaves the same.
    df = _run({"fixed": Counting(scale=4)}, tiny_root, tmp_path, scales=(2,))
    assert df["error"].str.contains("x4 model").all()


def test_missing_bundled_weights_name_what_is_missing(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SR_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    df = _run(["edsr_baseline"], tiny_root, tmp_path)
    assert df["error"].str.contains("no bundled weights for edsr_baseline x2").all()
    header, body = paper_table(summarize(df))
    assert body[0][header.index("Tiny")] == MISSING


def test_one_failing_image_does_not_stop_the_others(tiny_root, tmp_path):
    model = Counting(fail_on_width=20)  # b.png's LR is 20 wide
    df = _run({"flaky": model}, tiny_root, tmp_path).set_index("image")
    assert "boom on this image" in df.loc["b", "error"] and math.isnan(df.loc["b", "psnr_y"])
    assert df.loc["a", "error"] == "" and df.loc["a", "psnr_y"] > 20
    summary = summarize(df.reset_index())
    assert summary.loc[0, "failed"] == 1 and math.isnan(summary.loc[0, "psnr_y"])
    header, body = paper_table(summary)
    assert body[0][header.index("Tiny")] == MISSING
    # Failures are not cached: the next run tries again.
    _run({"flaky": model}, tiny_root, tmp_path)
    assert model.calls == 4


def test_model_objects_callables_and_labels(tiny_root, tmp_path):
    plain = lambda x: imresize(x, scale=2)  # noqa: E731  (a callable without attributes)
    df = _run({"mine": Counting(), "fn": plain}, tiny_root, tmp_path)
    assert set(df["model"]) == {"mine", "fn"}
    assert (df["error"] == "").all()
    by = df.groupby("model")["psnr_y"].mean()
    assert by["mine"] == pytest.approx(by["fn"], abs=1e-3)
    df = _run([Counting(), Counting()], tiny_root, tmp_path)
    assert list(dict.fromkeys(df["model"])) == ["counting", "counting#2"]


def test_columns(tiny_root, tmp_path):
    df = _run(["bicubic"], tiny_root, tmp_path)
    for c in ["model", "scale", "dataset", "image", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb",
              "seconds", "megapixels", "lr_source", "tiles", "device", "params", "gmacs", "error"]:
        assert c in df.columns
    assert set(df["image"]) == {"a", "b"} and (df["lr_source"] == "generated").all()
    assert (df["psnr_rgb"] != df["psnr_y"]).all()


def test_lpips_column_is_nan_with_a_note_when_unavailable(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SR_LPIPS_ALEXNET", str(tmp_path / "none.safetensors"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.warns(UserWarning, match="LPIPS unavailable"):
        df = _run(["bicubic"], tiny_root, tmp_path, lpips=True)
    assert df["lpips"].isna().all()
    assert any("LPIPS unavailable" in n for n in df.attrs["notes"])


def test_lpips_column_and_table(tiny_root, tmp_path):
    df = _run(["bicubic"], tiny_root, tmp_path, scales=(2, 3), lpips="random")  # untrained AlexNet
    x2, x3 = df[df["scale"] == 2], df[df["scale"] == 3]
    assert x2["lpips"].notna().all() and (x2["lpips"] > 0).all() and (x2["error"] == "").all()
    # b at x3 is 30x33 after the border crop: too small for AlexNet, said in that row's error
    assert x3.set_index("image").loc["b", "error"].startswith("ValueError: LPIPS needs at least 32x32")
    md = to_markdown(summarize(df))
    assert "LPIPS (v0.1, AlexNet" in md and "| bicubic | x2 | " in md.split("LPIPS (v0.1")[1]


# ------------------------------------------------------------------ cache

def test_cache_second_run_computes_nothing(tiny_root, tmp_path):
    model = Counting()
    first = _run({"m": model}, tiny_root, tmp_path)
    assert model.calls == 2
    second = _run({"m": model}, tiny_root, tmp_path)
    assert model.calls == 2
    cols = ["model", "scale", "dataset", "image", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"]
    pd.testing.assert_frame_equal(first[cols], second[cols])
    _run({"m": model}, tiny_root, tmp_path, cache=False)
    assert model.calls == 4
    # Other weights, other key.
    with torch.no_grad():
        model.gain.fill_(0.9)
    _run({"m": model}, tiny_root, tmp_path)
    assert model.calls == 6
    # Self-ensemble is another key too (8 passes per image).
    _run({"m": model}, tiny_root, tmp_path, ensemble=True)
    assert model.calls == 6 + 16


def test_cache_keeps_image_names_as_text(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    _png(root / "Digits" / "HR" / "0801.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    for _ in range(2):
        df = evaluate(["bicubic"], ["Digits"], [2], data_root=root, cache_dir=tmp_path / "c",
                      progress=False)
        assert df["image"].tolist() == ["0801"]


# ------------------------------------------------------------------ CLI and tables

def test_cli_writes_all_outputs(tiny_root, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli_main(["--models", "bicubic", "--datasets", "Tiny", "--scales", "2,3",
                   "--data-root", str(tiny_root), "--out", str(out),
                   "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert rc == 0
    for name in ["per_image.csv", "summary.csv", "table.md", "table.tex", "table.html"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    per_image = pd.read_csv(out / "per_image.csv")
    assert len(per_image) == 4
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["scale"]) == [2, 3]
    assert {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "params", "gmacs", "seconds", "device",
            "s_per_mp"} <= set(summary.columns)
    # seconds per output megapixel = total seconds / total output pixels of the row
    x2 = per_image[per_image["scale"] == 2]
    assert summary.loc[0, "s_per_mp"] == pytest.approx(x2["seconds"].sum() / x2["megapixels"].sum())
    md = (out / "table.md").read_text()
    cell = f"{summary.loc[0, 'psnr_y']:.2f} / {summary.loc[0, 'ssim_y']:.4f}"
    assert "| bicubic | x2 |" in md and cell in md
    assert "generated" in md  # no LR files: recorded in the notes
    assert cell in capsys.readouterr().out
    assert "\\begin{tabular}" in (out / "table.tex").read_text()
    assert "<table>" in (out / "table.html").read_text()


def test_cli_reports_user_errors(tmp_path, capsys):
    rc = cli_main(["--models", "bicubic", "--datasets", "Set5", "--data-root", str(tmp_path),
                   "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 2
    assert str(tmp_path / "Set5" / "HR") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unreadable_image_gives_an_error_row(tiny_root, tmp_path):
    (tiny_root / "Tiny" / "HR" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    df = _run(["bicubic"], tiny_root, tmp_path).set_index("image")
    assert "c.png" in df.loc["c", "error"] and math.isnan(df.loc["c", "psnr_y"])
    assert (df.loc[["a", "b"], "error"] == "").all()


# ------------------------------------------------------------------ download (local server only)

class _RangeServer:
    """A 127.0.0.1 HTTP server for one file that honours Range requests and logs them."""

    def __init__(self, payload: bytes):
        import http.server
        import threading

        self.payload, self.requests = payload, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(outer.payload):
                    self.send_response(416)
                    self.end_headers()
                    return
                body = outer.payload[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/benchmark.tar"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def archive_server(tmp_path):
    import hashlib
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ["benchmark/Set5/HR/baby.png", "benchmark/Set5/LR_bicubic/X2/babyx2.png",
                     "../evil.png"]:
            data = name.encode() * 500
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    payload = buf.getvalue()
    server = _RangeServer(payload)
    yield server, payload, "sha256:" + hashlib.sha256(payload).hexdigest()
    server.close()


def test_download_resumes_verifies_and_caches(archive_server, tmp_path):
    from eval.download import fetch

    server, payload, checksum = archive_server
    dest = tmp_path / "dl" / "benchmark.tar"
    dest.parent.mkdir()
    (tmp_path / "dl" / "benchmark.tar.part").write_bytes(payload[:1000])  # an interrupted run
    assert fetch(server.url, dest, checksum, progress=False) == dest
    assert dest.read_bytes() == payload
    assert server.requests == ["bytes=1000-"]  # only the rest was sent
    assert not (tmp_path / "dl" / "benchmark.tar.part").exists()
    fetch(server.url, dest, checksum, progress=False)
    assert len(server.requests) == 1  # cached: no second request


def test_download_checksum_mismatch_leaves_nothing(archive_server, tmp_path):
    from eval.download import fetch

    server, _, _ = archive_server
    dest = tmp_path / "benchmark.tar"
    with pytest.raises(DatasetError, match="expected 00"):
        fetch(server.url, dest, "md5:" + "0" * 32, progress=False)
    assert not dest.exists() and not (tmp_path / "benchmark.tar.part").exists()


def test_download_and_extract_into_the_layout(archive_server, tmp_path, monkeypatch):
    from eval.download import download_benchmarks

    server, _, checksum = archive_server
    monkeypatch.setenv("SR_CACHE_DIR", str(tmp_path / "cache"))
    root = download_benchmarks("benchmark", url=server.url, checksum=checksum, progress=False)
    assert root == tmp_path / "cache" / "benchmarks"
    assert (root / "Set5" / "HR" / "baby.png").is_file()
    assert (root / "Set5" / "LR_bicubic" / "X2" / "babyx2.png").is_file()
    assert not (tmp_path / "cache" / "evil.png").exists() and not (root.parent / "evil.png").exists()
    # Without a checksum for a custom URL it refuses unless told otherwise.
    with pytest.raises(DatasetError, match="no known checksum"):
        download_benchmarks("benchmark", url=server.url + "?mirror", progress=False)


def test_download_offline_error_is_clear(tmp_path):
    from eval.download import fetch

    with pytest.raises(DatasetError, match="cannot download"):
        fetch("http://127.0.0.1:9/benchmark.tar", tmp_path / "x.tar", progress=False, timeout=5)
