"""Faithfulness of the EDSR/RCAN ports: official state-dict layouts and spandrel parity.

spandrel (0.4.x) knows RCAN among our architectures (not EDSR, SRResNet-with-BN,
SRCNN, FSRCNN or ESPCN), so RCAN is checked against spandrel's independent port
and EDSR against the official EDSR-PyTorch layout with a functional re-statement of
its forward pass.
"""
import pytest
import torch
import torch.nn.functional as F
from spandrel import ModelLoader

from sr.models import create_model
from sr.models.common import DIV2K_RGB_MEAN

# RCAN at 8x8 is fast even in the real 10x20 configuration; x2/x3 run shallow.
RCAN_CASES = [(4, {}), (2, {"n_resgroups": 2, "n_resblocks": 3}),
              (3, {"n_resgroups": 2, "n_resblocks": 3, "reduction": 8})]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _perturb_biases(model):
    # Default init leaves biases small; random ones make every layer and skip matter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.05, 0.05)
    return model


@pytest.mark.parametrize("scale, hparams", RCAN_CASES)
def test_rcan_state_dict_runs_identically_in_spandrel(scale, hparams):
    ours = _perturb_biases(create_model("rcan", scale, **hparams)).eval()
    descriptor = ModelLoader().load_from_state_dict(ours.state_dict())
    assert descriptor.architecture.id == "RCAN"
    assert descriptor.scale == scale
    theirs = descriptor.model.eval()
    hp = theirs.hyperparameters
    assert (hp["n_resgroups"], hp["n_resblocks"], hp["reduction"]) == (
        ours.hparams["n_resgroups"], ours.hparams["n_resblocks"], ours.hparams["reduction"])
    assert hp["rgb_range"] == ours.hparams["rgb_range"] == 255

    x = torch.rand(1, 3, 8, 7)
    with torch.no_grad():
        expected = ours(x)
        got = theirs(x.clone())  # spandrel's RCAN scales its input in place
        clamped = descriptor(x.clone())
    assert expected.shape == (1, 3, 8 * scale, 7 * scale)
    assert expected.std() > 1e-3  # not a degenerate constant image
    assert (expected - got).abs().max() < 1e-5
    assert (expected.clamp(0, 1) - clamped).abs().max() < 1e-5


def test_spandrel_rcan_state_dict_loads_into_ours():
    theirs = ModelLoader().load_from_state_dict(
        _perturb_biases(create_model("rcan", 2, n_resgroups=1, n_resblocks=2)).state_dict()).model
    _perturb_biases(theirs).eval()
    ours = create_model("rcan", 2, n_resgroups=1, n_resblocks=2).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(1, 3, 6, 9)
    with torch.no_grad():
        assert (ours(x) - theirs(x.clone())).abs().max() < 1e-5


def _official_edsr_keys(n_resblocks, scale):
    keys = ["sub_mean", "add_mean", "head.0", f"body.{n_resblocks}", "tail.1"]
    keys += [f"body.{i}.body.{j}" for i in range(n_resblocks) for j in (0, 2)]
    keys += ["tail.0.0", "tail.0.2"] if scale == 4 else ["tail.0.0"]
    return {f"{k}.{p}" for k in keys for p in ("weight", "bias")}


@pytest.mark.parametrize("name, blocks, feats", [("edsr_baseline", 16, 64), ("edsr", 32, 256)])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_state_dict_has_the_official_layout(name, blocks, feats, scale):
    with torch.device("meta"):
        sd = create_model(name, scale).state_dict()
    assert set(sd) == _official_edsr_keys(blocks, scale)
    assert sd["head.0.weight"].shape == (feats, 3, 3, 3)
    assert sd["tail.0.0.weight"].shape == (feats * (9 if scale == 3 else 4), feats, 3, 3)
    assert sd["tail.1.weight"].shape == (3, feats, 3, 3)


def _official_edsr_forward(sd, x, n_resblocks, res_scale):
    """EDSR-PyTorch's forward on a [0, 255] image, restated with F.conv2d."""
    def conv(t, key):
        return F.conv2d(t, sd[key + ".weight"], sd[key + ".bias"], padding=sd[key + ".weight"].shape[-1] // 2)
    x = conv(x, "sub_mean")
    x = conv(x, "head.0")
    res = x
    for i in range(n_resblocks):
        res = res + conv(F.relu(conv(res, f"body.{i}.body.0")), f"body.{i}.body.2") * res_scale
    res = conv(res, f"body.{n_resblocks}") + x
    i = 0
    while f"tail.0.{i}.weight" in sd:
        res = conv(res, f"tail.0.{i}")
        res = F.pixel_shuffle(res, int(round((res.shape[1] // sd["tail.1.weight"].shape[1]) ** 0.5)))
        i += 2
    return conv(conv(res, "tail.1"), "add_mean")


def _official_mean_shift(sign):
    # What an official .pt stores: identity 1x1 conv, bias sign * 255 * DIV2K mean.
    return torch.eye(3).view(3, 3, 1, 1), sign * 255 * torch.tensor(DIV2K_RGB_MEAN)


@pytest.mark.parametrize("name, scale", [("edsr_baseline", 2), ("edsr_baseline", 3),
                                         ("edsr_baseline", 4), ("edsr", 4)])
def test_official_edsr_weights_give_the_official_output_in_our_range(name, scale):
    # An "official file": random convolutions plus the mean shifts EDSR-PyTorch saves.
    model = create_model(name, scale).eval()
    sd = _perturb_biases(model).state_dict()
    for key, sign in (("sub_mean", -1), ("add_mean", 1)):
        sd[f"{key}.weight"], sd[f"{key}.bias"] = _official_mean_shift(sign)
    model.load_state_dict(sd, strict=True)

    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        ours = model(x)
        official = _official_edsr_forward(sd, x * 255, model.hparams["n_resblocks"],
                                          model.hparams["res_scale"]) / 255
    assert ours.shape == (1, 3, 6 * scale, 5 * scale)
    assert ours.std() > 1e-3
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=0)
