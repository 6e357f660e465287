"""The model zoo: registry, shapes, parameter counts, Y-channel wrappers, discriminator."""
import json

import pytest
import torch
from torch import nn

from sr.color import rgb_to_y
from sr.errors import ScaleError, SRError
from sr.models import (MODELS, Discriminator, ModelConfigError, YChannelSR, count_parameters,
                       create_model, list_models)
from sr.resize import imresize

Y_MODELS = ["srcnn", "fsrcnn", "espcn"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# The deep models run shallow here (the tail, which sets the shape, is unchanged); their
# real configurations run in the parameter-count and spandrel/official-layout tests.
SHALLOW = {"edsr": {"n_resblocks": 2}, "rcan": {"n_resgroups": 2, "n_resblocks": 2}}


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", list(MODELS))
def test_shape_range_and_attributes(name, scale):
    model = create_model(name, scale, **SHALLOW.get(name, {})).eval()
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 12 * scale, 10 * scale)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    # Random weights, so only "about [0, 1]": catches a forgotten /255 or colour offset.
    assert y.abs().max() < 2.5
    assert (model.scale, model.arch) == (scale, name)
    assert isinstance(model.scale, int)
    assert model.hparams == MODELS[name].defaults | SHALLOW.get(name, {})


def test_batch_and_train_mode():
    model = create_model("srresnet", 2).train()
    y = model(torch.rand(2, 3, 9, 7))
    y.mean().backward()
    assert y.shape == (2, 3, 18, 14)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", list(MODELS))
def test_hparams_json_round_trip_rebuilds_the_model(name):
    hp = SHALLOW.get(name, {})
    model = create_model(name, 3, **hp)
    again = create_model(model.arch, model.scale, **json.loads(json.dumps(model.hparams)))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}
    assert again.hparams == model.hparams == MODELS[name].defaults | hp
    again.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x), atol=0, rtol=0)


def test_hparams_override_is_recorded():
    model = create_model("edsr_baseline", 2, n_resblocks=2, n_feats=8, rgb_range=1)
    assert model.hparams == {"n_resblocks": 2, "n_feats": 8, "res_scale": 1.0, "rgb_range": 1}
    assert len(model.body) == 3  # two blocks + the body's closing conv
    assert MODELS["edsr"].defaults == {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1,
                                       "rgb_range": 255}


def test_exact_parameter_counts_at_x4():
    info = {m.name: m for m in list_models()}
    assert info["edsr_baseline"].params_x4 == 1_517_571
    assert info["edsr"].params_x4 == 43_089_923
    assert count_parameters(create_model("edsr_baseline", 4)) == 1_517_571
    assert abs(info["rcan"].params_x4 - 15.59e6) / 15.59e6 < 0.005
    assert abs(info["srresnet"].params_x4 - 1.55e6) / 1.55e6 < 0.01
    assert info["srgan"].params_x4 == info["srresnet"].params_x4
    assert info["bicubic"].params_x4 == 0
    # The papers count filter weights only: SRCNN 9-5-5 has 57,184, FSRCNN(56,12,4) 12,464.
    for name, weights in (("srcnn", 57_184), ("fsrcnn", 12_464)):
        model = create_model(name, 4)
        assert sum(p.numel() for p in model.parameters() if p.dim() == 4) == weights


def test_mean_shift_is_not_a_parameter_but_is_in_the_state_dict():
    model = create_model("edsr_baseline", 2)
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith(("sub_mean", "add_mean")) for n in names)
    assert {"sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"} <= set(model.state_dict())
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_list_models_covers_the_registry_only():
    infos = list_models()
    assert [m.name for m in infos] == list(MODELS)
    assert all(m.scales == (2, 3, 4) for m in infos)
    assert {m.name for m in infos if m.y_channel} == set(Y_MODELS)
    assert "discriminator" not in {m.name.lower() for m in infos}
    cheap = {m.name: m.params_x4 for m in infos if m.params_x4 < 2_000_000}
    for name, params in cheap.items():
        assert count_parameters(create_model(name, 4)) == params


@pytest.mark.parametrize("call, error, words", [
    (lambda: create_model("edsr_large", 4), ModelConfigError, ["edsr_large", "rcan", "bicubic"]),
    (lambda: create_model("rcan", 5), ScaleError, ["x2", "x3", "x4", "x5"]),
    (lambda: create_model("srcnn", 0), ScaleError, ["x2"]),
    (lambda: create_model("espcn", True), ScaleError, ["x2"]),
    (lambda: create_model("fsrcnn", 2, depth=3), ModelConfigError, ["depth", "d, s, m"]),
    (lambda: create_model("espcn", 2, act="gelu"), ModelConfigError, ["tanh", "relu"]),
])
def test_errors_are_one_line_and_list_choices(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, SRError)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_unknown_model_is_also_a_value_error():
    with pytest.raises(ValueError):
        create_model("nope", 2)


def test_sub_pixel_stages():
    def shuffles(model):
        return [m.upscale_factor for m in model.modules() if isinstance(m, nn.PixelShuffle)]
    assert shuffles(create_model("srresnet", 4)) == [2, 2]
    assert shuffles(create_model("srresnet", 3)) == [3]
    assert shuffles(create_model("edsr_baseline", 2)) == [2]
    assert shuffles(create_model("espcn", 3)) == [3]


# ---------------------------------------------------------------- Y-channel models

@pytest.mark.parametrize("name", Y_MODELS)
def test_y_models_keep_grey_grey(name):
    model = create_model(name, 3).eval()
    grey = torch.rand(1, 1, 10, 9).expand(1, 3, 10, 9)
    with torch.no_grad():
        y = model(grey)
    assert (y - y[:, :1]).abs().max() < 1e-4


def test_y_models_keep_colour_math_in_float32():
    model = create_model("fsrcnn", 2).eval()
    grey = torch.rand(1, 1, 8, 7).expand(1, 3, 8, 7)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(grey)
        low = model.to(torch.bfloat16)(grey.to(torch.bfloat16))
    assert auto.dtype == torch.float32 and low.dtype == torch.bfloat16
    # bf16 colour conversion would tint grey by ~4e-3.
    assert (auto - auto[:, :1]).abs().max() < 1e-4
    assert (low - low[:, :1]).abs().max() == 0


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", Y_MODELS)
def test_forward_y_agrees_with_forward(name, scale):
    model = create_model(name, scale).eval()
    assert isinstance(model, YChannelSR)
    x = torch.rand(2, 3, 11, 8)
    with torch.no_grad():
        y_sr = model.forward_y(rgb_to_y(x))
        rgb_sr = model(x)
    assert y_sr.shape == (2, 1, 11 * scale, 8 * scale)
    torch.testing.assert_close(rgb_to_y(rgb_sr), y_sr, atol=2e-5, rtol=0)
    # The inner network maps 1 channel to 1 channel.
    assert model.net(model.prepare_y(rgb_to_y(x))).shape == y_sr.shape


def test_srcnn_feeds_bicubic_upscaled_y():
    model = create_model("srcnn", 3)
    y_lr = torch.rand(1, 1, 7, 6)
    torch.testing.assert_close(model.prepare_y(y_lr), imresize(y_lr, scale=3))
    assert create_model("fsrcnn", 3).prepare_y(y_lr) is y_lr


@pytest.mark.parametrize("upsample_first", [True, False])
def test_identity_luma_net_gives_bicubic(upsample_first):
    # With an identity network on pre-upscaled luma, the wrapper must reduce to plain
    # bicubic of the RGB image (colour conversion is linear and exactly inverted).
    net = nn.Identity() if upsample_first else nn.Upsample(scale_factor=2, mode="nearest")
    model = YChannelSR(net, 2, upsample_first=upsample_first)
    x = torch.rand(1, 3, 8, 6)
    out = model(x)
    if upsample_first:
        torch.testing.assert_close(out, imresize(x, scale=2), atol=1e-5, rtol=0)
    else:
        # Luma from the nearest-neighbour net, chroma from bicubic.
        torch.testing.assert_close(rgb_to_y(out), net(rgb_to_y(x)), atol=1e-5, rtol=0)


def test_paper_initialisation():
    srcnn = create_model("srcnn", 2).net
    for m in srcnn.modules():
        if isinstance(m, nn.Conv2d):
            assert abs(m.weight.std().item() - 1e-3) < 3e-4
            assert m.bias.abs().max() == 0
    fsrcnn = create_model("fsrcnn", 2).net
    assert abs(fsrcnn.tail.weight.std().item() - 1e-3) < 3e-4
    first = fsrcnn.body[0].weight  # He init: std sqrt(2 / fan_in), fan_in = 25
    assert abs(first.std().item() - (2 / 25) ** 0.5) < 0.05


# ---------------------------------------------------------------- discriminator

def test_discriminator_takes_any_crop():
    disc = Discriminator().train()
    logits = disc(torch.rand(2, 3, 96, 96))
    assert logits.shape == (2, 1)
    nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    assert disc.features[0].weight.grad is not None
    with torch.no_grad():
        assert disc.eval()(torch.rand(1, 3, 128, 128)).shape == (1, 1)


def test_discriminator_layout():
    disc = Discriminator()
    convs = [m for m in disc.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2] * 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in disc.features) == 7
    assert not isinstance(disc.features[1], nn.BatchNorm2d)
    linears = [m for m in disc.classifier if isinstance(m, nn.Linear)]
    assert [l.out_features for l in linears] == [1024, 1]
    assert not any(isinstance(m, nn.Sigmoid) for m in disc.modules())


@pytest.mark.parametrize("name", ["edsr_baseline", "rcan"])
def test_mixed_precision_keeps_head_and_output_in_float32(name):
    """Under bf16 autocast the body runs in bf16, but the head (whose input would lose
    half a grey level in bf16) and the output are float32; RCAN also keeps its last conv
    in float32. The result is close to fp32 (the fast inference path relies on this)."""
    torch.manual_seed(0)
    kw = {"n_resgroups": 2, "n_resblocks": 3} if name == "rcan" else {"n_resblocks": 4}
    model = create_model(name, 2, **kw).eval()
    x = torch.rand(1, 3, 24, 24)
    dtypes = {}

    def record(key):
        def hook(module, inputs, output):
            dtypes[key] = output.dtype
        return hook
    for key, module in (("head", model.head[0]), ("body", model.body[0]), ("last", model.tail[1])):
        module.register_forward_hook(record(key))
    with torch.inference_mode():
        ref = model(x)
        dtypes.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(x)
    assert fast.dtype == torch.float32
    assert dtypes["head"] == torch.float32 and dtypes["body"] == (
        torch.float32 if name == "rcan" else torch.bfloat16)
    assert dtypes["last"] == (torch.float32 if name == "rcan" else torch.bfloat16)
    assert (fast.clamp(0, 1) - ref.clamp(0, 1)).abs().max() * 255 < 2
