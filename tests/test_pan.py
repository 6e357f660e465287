"""A published checkpoint evaluated through eval gives the published numbers.

PAN x4 (Zhao et al. 2020, trained on DF2K) reports Set5 x4 32.13 / 0.8948.
"""
import pytest
import torch

from eval import evaluate
from eval.tables import summarize
from tests.pan_arch import PAN

PUBLISHED_SET5_X4 = (32.13, 0.8948)


@pytest.fixture(scope="module")
def pan_x4_path(pan_dir):
    return pan_dir / "PANx4_DF2K.pth"


def test_pan_architecture_fits_the_checkpoint_exactly(pan_x4_path):
    model = PAN(scale=4)
    state = torch.load(pan_x4_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == 272_419  # the paper's 272K


def test_pan_set5_x4_reproduces_published(pan_x4_path, benchmarks_dir, tmp_path):
    model = PAN(scale=4)
    model.load_state_dict(torch.load(pan_x4_path, map_location="cpu", weights_only=True))
    df = evaluate({"PAN": model}, ["Set5"], [4], data_root=benchmarks_dir, device="cpu",
                  cache_dir=tmp_path, progress=False)
    assert (df["error"] == "").all() and (df["lr_source"] == "provided").all()
    row = summarize(df).iloc[0]
    assert row["model"] == "PAN" and row["images"] == 5
    assert row["psnr_y"] == pytest.approx(PUBLISHED_SET5_X4[0], abs=0.01)
    assert row["ssim_y"] == pytest.approx(PUBLISHED_SET5_X4[1], abs=5e-4)
    assert row["params"] == 272_419


def test_pan_checkpoint_path_route(pan_x4_path, benchmarks_dir, tmp_path):
    """Through a checkpoint path the file is loaded by sr.checkpoints (spandrel for
    third-party files). spandrel 0.4 has no PAN: the rows must then say so clearly."""
    df = evaluate([str(pan_x4_path)], ["Set5"], [4], data_root=benchmarks_dir, device="cpu",
                  cache_dir=tmp_path, progress=False)
    assert (df["model"] == "PANx4_DF2K").all()
    if (df["error"] == "").all():  # a spandrel that knows PAN
        row = summarize(df).iloc[0]
        assert row["psnr_y"] == pytest.approx(PUBLISHED_SET5_X4[0], abs=0.01)
        assert row["ssim_y"] == pytest.approx(PUBLISHED_SET5_X4[1], abs=5e-4)
    else:
        assert df["error"].str.contains("PANx4_DF2K.pth").all()
        assert df["error"].str.contains("unknown architecture").all()
