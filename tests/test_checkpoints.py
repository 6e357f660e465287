import os
import pickle

import pytest
import spandrel
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact

import sr.checkpoints as ckpt
from sr.checkpoints import (CheckpointError, bundled_weights, load_model, read_metadata,
                            save_checkpoint)
from sr.errors import ScaleError
from sr.models import MODELS, create_model

# Small enough to build and run in milliseconds, big enough to have every layer kind.
TINY = {
    "edsr_baseline": dict(n_resblocks=2, n_feats=16),
    "edsr": dict(n_resblocks=2, n_feats=16),
    "rcan": dict(n_resgroups=2, n_resblocks=2, n_feats=16, reduction=4),
    "srresnet": dict(n_resblocks=2, n_feats=16),
    "srgan": dict(n_resblocks=2, n_feats=16),
    "srcnn": dict(n1=16, n2=8),
    "fsrcnn": dict(d=16, s=8, m=1),
    "espcn": dict(n1=16, n2=8),
}


def tiny(arch, scale=2, seed=0):
    torch.manual_seed(seed)
    model = create_model(arch, scale, **TINY.get(arch, {})).eval()
    # Randomise every floating tensor (BN statistics, near-zero inits) so that a
    # wrongly loaded weight changes the output.
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t) * 0.1 + (1.0 if name.endswith("running_var") else 0.0))
    return model


def image(h=9, w=11, seed=1):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv(ckpt.WEIGHTS_ENV, str(folder))
    return folder


# ---------------------------------------------------------------- own format

@pytest.mark.parametrize("arch", list(MODELS))
def test_round_trip_every_arch(arch, tmp_path):
    model = tiny(arch, scale=3)
    meta = {"provenance": {"recipe": "test", "steps": 7, "device": "cpu"},
            "eval": {"Set5": {"psnr": 30.5, "ssim": 0.9}}, "note": "hello"}
    path = save_checkpoint(model, tmp_path / f"{arch}.safetensors", metadata=meta)
    assert [p.name for p in tmp_path.iterdir()] == [f"{arch}.safetensors"]  # no temp file left

    loaded = load_model(path)
    assert not loaded.training
    assert (loaded.arch, loaded.scale, loaded.hparams) == (arch, 3, model.hparams)
    x = image()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for key in ("provenance", "eval", "note"):
        assert loaded.metadata[key] == meta[key]
    assert read_metadata(path) == loaded.metadata
    assert loaded.metadata["format"] == "srwb/1" and loaded.metadata["dtype"] == "float32"


def test_half_storage_round_trip(tmp_path):
    model = tiny("edsr_baseline")
    full = save_checkpoint(model, tmp_path / "full.safetensors")
    half = save_checkpoint(model, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    with safe_open(str(half), "pt") as f:
        assert f.get_tensor("head.0.weight").dtype == torch.float16
    loaded = load_model(half)
    assert read_metadata(half)["dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = image()
    with torch.no_grad():
        want, got = model(x), loaded(x)
    assert not torch.equal(got, want)  # it really was rounded
    torch.testing.assert_close(got, want, atol=2e-3, rtol=0)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    target = tmp_path / "m.safetensors"
    save_checkpoint(tiny("espcn"), target)
    before = target.read_bytes()
    monkeypatch.setattr(ckpt, "save_file", broken)
    with pytest.raises(OSError):
        save_checkpoint(tiny("espcn", seed=5), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# ---------------------------------------------------------------- names

def test_name_lookup_in_weights_dir(weights_dir):
    model = tiny("espcn", scale=2)
    save_checkpoint(model, weights_dir / "espcn_x2.safetensors")
    save_checkpoint(tiny("espcn", scale=3), weights_dir / "espcn_x3.safetensors")
    (weights_dir / "README.txt").write_text("not weights")
    assert bundled_weights() == [("espcn", 2, weights_dir / "espcn_x2.safetensors"),
                                 ("espcn", 3, weights_dir / "espcn_x3.safetensors")]
    x = image()
    for loaded in (load_model("espcn", scale=2), load_model("espcn_x2"), load_model("espcn_x2", scale=2)):
        assert (loaded.arch, loaded.scale) == ("espcn", 2)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    with pytest.raises(ScaleError):
        load_model("espcn")  # two scales bundled: ambiguous
    with pytest.raises(ScaleError) as err:
        load_model("espcn_x2", scale=3)
    assert "x2" in one_line(err)


def test_missing_bundled_weights_names_file_and_alternatives(weights_dir):
    save_checkpoint(tiny("espcn"), weights_dir / "espcn_x2.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_model("edsr_baseline", scale=4)
    msg = one_line(err)
    assert str(weights_dir / "edsr_baseline_x4.safetensors") in msg and "espcn_x2" in msg
    with pytest.raises(CheckpointError) as err:
        load_model("no_such_model")
    assert "espcn_x2" in one_line(err)


def test_weights_dir_attribute_can_be_patched(tmp_path, monkeypatch):
    monkeypatch.delenv(ckpt.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(ckpt, "WEIGHTS_DIR", tmp_path)
    save_checkpoint(tiny("fsrcnn", scale=4), tmp_path / "fsrcnn_x4.safetensors")
    assert load_model("fsrcnn").scale == 4  # the only bundled scale


def test_bicubic_needs_no_weights(weights_dir):
    model = load_model("bicubic", scale=3)
    assert (model.arch, model.scale) == ("bicubic", 3)
    assert model(image()).shape == (1, 3, 27, 33)
    with pytest.raises(ScaleError):
        load_model("bicubic")


# ---------------------------------------------------------------- third-party files

def test_official_edsr_layout_with_prefix_and_wrapper(tmp_path):
    model = tiny("edsr_baseline", scale=2)
    model16 = create_model("edsr_baseline", 3)  # the official size
    ema = {f"module.{k}": v for k, v in model.state_dict().items()}
    decoy = {f"module.{k}": torch.zeros_like(v) for k, v in model.state_dict().items()}
    torch.save({"params": decoy, "params_ema": ema}, tmp_path / "edsr.pt")
    torch.save(model16.state_dict(), tmp_path / "edsr16.pth")

    loaded = load_model(tmp_path / "edsr.pt")
    assert (loaded.arch, loaded.scale) == ("edsr_baseline", 2)
    assert loaded.hparams == model.hparams
    x = image()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.metadata["format"] == "third-party"

    official = load_model(tmp_path / "edsr16.pth", scale=3)
    assert (official.arch, official.scale) == ("edsr_baseline", 3)

    # Wider than 64 channels is EDSR proper, whose residual scaling (0.1) the
    # weights cannot show: the registry default applies.
    wide = create_model("edsr", 2, n_resblocks=1, n_feats=72)
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    loaded = load_model(tmp_path / "wide.pth")
    assert (loaded.arch, loaded.hparams) == ("edsr", wide.hparams)
    with torch.no_grad():
        assert torch.equal(loaded(x), wide(x))


def test_official_rcan_layout_matches_spandrel(tmp_path):
    model = tiny("rcan", scale=4)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "rcan.pth")
    loaded = load_model(tmp_path / "rcan.pth")
    assert (loaded.arch, loaded.scale) == ("rcan", 4)
    reference = spandrel.ModelLoader().load_from_state_dict(model.state_dict())
    x = image()
    with torch.no_grad():
        got = loaded(x)
        assert torch.equal(got, model(x))
        torch.testing.assert_close(got, reference.model(x.clone()), atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels", [3, 1])
def test_spandrel_model(channels, tmp_path):
    torch.manual_seed(0)
    net = Compact(num_in_ch=channels, num_out_ch=channels, num_feat=8, num_conv=2, upscale=2).eval()
    torch.save({"params_ema": net.state_dict()}, tmp_path / "compact.pth")
    model = load_model(tmp_path / "compact.pth", scale=2)
    assert isinstance(model, ckpt.SpandrelModel)
    assert (model.arch, model.scale) == ("spandrel:Compact", 2)
    x = image()
    with torch.no_grad():
        got = model(x)
        want = net(x) if channels == 3 else net(x.transpose(0, 1)).transpose(0, 1)
    assert got.shape == (1, 3, 18, 22)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)

    # Our format can carry it too (a safe replacement for the pickle).
    again = load_model(save_checkpoint(model, tmp_path / "compact.safetensors"))
    assert again.arch == "spandrel:Compact"
    with torch.no_grad():
        assert torch.equal(again(x), got)


def test_esrgan_keeps_its_model_prefix(tmp_path):
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(num_filters=8, num_blocks=1, scale=2).eval()
    assert all(k.startswith("model.") for k in net.state_dict())  # the original ESRGAN layout
    torch.save(net.state_dict(), tmp_path / "esrgan.pth")
    model = load_model(tmp_path / "esrgan.pth")
    assert (model.arch, model.scale) == ("spandrel:ESRGAN", 2)
    x = image()
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), atol=1e-6, rtol=0)


def test_spandrel_restoration_model_refused(tmp_path):
    torch.save(Compact(num_feat=8, num_conv=2, upscale=1).state_dict(), tmp_path / "denoise.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "denoise.pth")
    assert "not super-resolution" in one_line(err)


def test_unknown_state_dict(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "x.pth")
    assert "unknown architecture" in one_line(err)


# ---------------------------------------------------------------- hostile and broken files

class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused_without_running(writer, tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    payload = {"head.0.weight": torch.zeros(1), "x": _Exploit(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = one_line(err)
    assert msg.startswith(f"refusing to load {path}") and "pickled code" in msg and ".safetensors" in msg
    assert not marker.exists()


def test_broken_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(tiny("espcn").state_dict(), good)
    cases = {
        "missing.pth": None,
        "empty.pth": b"",
        "random.pth": os.urandom(512),
        "truncated.pt": good.read_bytes()[: good.stat().st_size // 2],
        "empty.safetensors": b"",
        "garbage.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}",
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            load_model(path)
        assert str(path) in one_line(err), name


def test_shape_mismatch_names_the_keys(tmp_path):
    model = tiny("edsr_baseline")
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["hparams"] = meta["hparams"].replace('"n_feats": 16', '"n_feats": 8')
    save_file(tensors, str(tmp_path / "lying.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "lying.safetensors")
    assert "head.0.weight (16, 3, 3, 3) vs model (8, 3, 3, 3)" in one_line(err)

    sd = model.state_dict()
    del sd["body.1.body.2.bias"]
    sd["body.0.body.9.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "edited.pth")
    msg = one_line(err)
    assert "missing keys: body.1.body.2.bias" in msg and "unexpected keys: body.0.body.9.weight" in msg


def test_scale_conflict(tmp_path):
    model = tiny("edsr_baseline", scale=2)
    own = save_checkpoint(model, tmp_path / "m.safetensors")
    torch.save(model.state_dict(), tmp_path / "m.pth")
    for path in (own, tmp_path / "m.pth"):
        assert load_model(path, scale=2).scale == 2
        with pytest.raises(ScaleError) as err:
            load_model(path, scale=4)
        assert "x2" in one_line(err)
