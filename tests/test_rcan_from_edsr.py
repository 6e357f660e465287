"""sr.train.rcan_from_edsr: an RCAN that starts where a trained EDSR-baseline stands."""
import torch

from sr.checkpoints import load_model, read_metadata, save_checkpoint
from sr.models import create_model
from sr.train import rcan_from_edsr
from tests.test_train_data import write_images

TINY_EDSR = {"n_resblocks": 3, "n_feats": 16}
TINY_RCAN = {"n_resgroups": 3, "n_resblocks": 4, "reduction": 4}


def _edsr() -> torch.nn.Module:
    torch.manual_seed(0)
    edsr = create_model("edsr_baseline", 2, **TINY_EDSR).eval()
    with torch.no_grad():  # give every bias a value, as training would
        for p in edsr.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return edsr


def test_groups_reproduce_edsr_features_exactly():
    edsr = _edsr()
    rcan = rcan_from_edsr.embed(edsr, **TINY_RCAN).eval()
    x = torch.rand(2, 3, 10, 12)
    with torch.no_grad():
        h = edsr.head(edsr.sub_mean(x * edsr.rgb_range))
        assert torch.equal(rcan.head(rcan.sub_mean(x * rcan.rgb_range)), h)
        # every group after the first is an identity, and the first gives EDSR's F = h + body(h)
        torch.testing.assert_close(rcan.body[:-1](h), h + edsr.body(h), rtol=1e-5, atol=1e-4)
    # the new blocks are trainable: random first convs, gates and later groups' blocks
    assert rcan.body[1].body[0].body[0].weight.abs().sum() > 0


def test_fitted_last_conv_makes_rcan_match_edsr(tmp_path):
    edsr = _edsr()
    rcan = rcan_from_edsr.embed(edsr, **TINY_RCAN).eval()
    lrs = [torch.rand(1, 3, 16, 16) for _ in range(4)]
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        before = (rcan(x) - edsr(x)).abs().max()
        residual = rcan_from_edsr.fit_last_conv(rcan, edsr, lrs, samples_per_image=256, seed=0)
        after = (rcan(x) - edsr(x)).abs().max()
    assert 0 <= residual < 0.5
    assert after < before / 2


def test_cli_writes_an_rcan_checkpoint_with_provenance(tmp_path):
    edsr = _edsr()
    src = save_checkpoint(edsr, tmp_path / "edsr.safetensors")
    write_images(tmp_path / "data" / "hr", [(32, 28), (28, 36), (24, 24)], seed=3)
    out = tmp_path / "rcan_init.safetensors"
    # the tiny EDSR has 16 channels, so the RCAN built by the CLI (default groups) has 16 too
    assert rcan_from_edsr.main([str(src), str(out), "--data", "hr", "--data-root", str(tmp_path / "data"),
                                "--images", "2", "--samples", "64"]) == 0
    meta = read_metadata(out)
    assert meta["arch"] == "rcan" and meta["scale"] == 2
    assert meta["provenance"]["init"] == "rcan_from_edsr"
    assert "fit_relative_residual" in meta["provenance"]
    assert load_model(out).arch == "rcan"


def test_cli_refuses_a_checkpoint_that_is_not_edsr_baseline(tmp_path, capsys):
    torch.manual_seed(0)
    src = save_checkpoint(create_model("espcn", 2), tmp_path / "espcn.safetensors")
    assert rcan_from_edsr.main([str(src), str(tmp_path / "out.safetensors")]) == 2
    assert "not edsr_baseline" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_says_in_one_line_what_is_missing(tmp_path, capsys):
    edsr = save_checkpoint(_edsr(), tmp_path / "edsr.safetensors")
    assert rcan_from_edsr.main([str(tmp_path / "nope.safetensors"), str(tmp_path / "out.safetensors")]) == 2
    assert rcan_from_edsr.main([str(edsr), str(tmp_path / "out.safetensors"), "--data", "missing",
                                "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "training folder not found" in err[1]
    assert not (tmp_path / "out.safetensors").exists()
