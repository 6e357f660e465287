"""Training recipes: loading, base chains, dotted overrides, validation, lr schedules."""

import pytest
import torch

from sr.models import create_model
from sr.paths import PROJECT_ROOT
from sr.train.config import ConfigError, DEFAULTS, load_config, parse_override
from sr.train.schedule import EMA, lr_factor

RECIPES = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))


def test_every_published_setup_has_a_recipe():
    names = {p.stem for p in RECIPES}
    for needed in ("srcnn", "fsrcnn", "espcn", "edsr_baseline", "edsr", "rcan", "srresnet_x4", "srgan_x4"):
        assert needed in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads_and_builds_its_model(path):
    cfg = load_config(path)
    m = cfg["model"]
    with torch.device("meta"):  # no memory, no init cost (EDSR is 43M parameters)
        model = create_model(m["name"], m["scale"], **m["hparams"])
    assert model.scale == m["scale"]
    assert cfg["data"]["hr_dirs"]


def test_scale_specific_recipe_inherits_its_base():
    cfg = load_config(PROJECT_ROOT / "configs" / "edsr_x4.yaml")
    assert cfg["model"]["name"] == "edsr" and cfg["model"]["scale"] == 4
    assert cfg["init"]["strict"] is False and cfg["init"]["from"]
    assert cfg["data"]["patch"] == 48 and cfg["optim"]["lr"] == 1e-4  # from edsr_baseline.yaml


def test_srgan_recipe_follows_the_paper():
    cfg = load_config(PROJECT_ROOT / "configs" / "srgan_x4.yaml")
    loss = cfg["loss"]
    assert loss["pixel"]["weight"] == 0
    assert loss["perceptual"]["layer"] == "conv5_4" and loss["perceptual"]["before_activation"] is False
    assert loss["perceptual"]["feature_scale"] == pytest.approx(1 / 12.75)
    assert loss["perceptual"]["weights"] == "imagenet"  # random VGG only when asked for explicitly
    assert loss["adversarial"]["weight"] == pytest.approx(1e-3)
    assert cfg["init"]["from"].endswith(".safetensors")


def test_srgan_mse_variant_differs_only_in_its_content_loss():
    vgg = load_config(PROJECT_ROOT / "configs" / "srgan_x4.yaml")
    mse = load_config(PROJECT_ROOT / "configs" / "srgan_mse_x4.yaml")
    assert mse["loss"]["perceptual"]["weight"] == 0  # so no VGG19 weights are needed
    assert mse["loss"]["pixel"]["type"] == "mse"
    assert mse["loss"]["pixel"]["weight"] == 4.0  # the paper's MSE on [-1, 1] images
    for key in ("model", "init", "data", "optim", "sched", "gan", "train"):
        assert mse[key] == vgg[key], key
    assert mse["loss"]["adversarial"] == vgg["loss"]["adversarial"]


@pytest.mark.parametrize("text, keys, value", [
    ("optim.lr=1e-4", ["optim", "lr"], 1e-4),
    ("train.steps=100", ["train", "steps"], 100),
    ("data.hr_dirs=[a, b]", ["data", "hr_dirs"], ["a", "b"]),
    ("train.compile=true", ["train", "compile"], True),
    ("train.amp=off", ["train", "amp"], "off"),  # YAML 1.1 would say False
    ("val.dataset=no", ["val", "dataset"], "no"),
    ("val.dataset=null", ["val", "dataset"], None),
    ("val.dataset=Set5", ["val", "dataset"], "Set5"),
    ("sched.min_lr=-2.5E-6", ["sched", "min_lr"], -2.5e-6),
])
def test_override_values_are_yaml_scalars(text, keys, value):
    assert parse_override(text) == (keys, value)


def test_overrides_apply_to_nested_keys(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: edsr_baseline, scale: 2}\ndata: {hr_dirs: [x]}\n")
    cfg = load_config(recipe, ["optim.lr=2e-4", "train.steps=7", "model.hparams.n_feats=8",
                               "loss.pixel.type=charbonnier"])
    assert cfg["optim"]["lr"] == 2e-4 and cfg["train"]["steps"] == 7
    assert cfg["model"]["hparams"] == {"n_feats": 8}
    assert cfg["loss"]["pixel"]["type"] == "charbonnier"
    assert cfg["optim"]["betas"] == DEFAULTS["optim"]["betas"]  # untouched siblings keep defaults


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "did you mean 'optim.lr'"),
    ("trian.steps=1", "did you mean 'train'"),
    ("optim.type=sgd", "optim.type must be one of"),
    ("train.steps=0", "train.steps must be a positive integer"),
    ("no_equals_sign", "section.key=value"),
    ("train.export=ema", "needs train.ema"),
    ("train.compile=fast", "train.compile must be one of"),
])
def test_bad_overrides_are_clear_errors(tmp_path, override, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: edsr_baseline}\ndata: {hr_dirs: [x]}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(recipe, [override])


def test_recipe_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(loop)
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_config(tmp_path / "missing.yaml")
    none = tmp_path / "none.yaml"
    none.write_text("data: {hr_dirs: [x]}\n")
    with pytest.raises(ConfigError, match="names no model"):
        load_config(none)


def test_lr_schedules():
    step = lr_factor({"type": "step", "warmup_steps": 4, "milestones": [10, 20], "gamma": 0.5,
                      "min_lr": 0.0}, 1e-3, 30)
    assert [step(i) for i in (0, 3, 4, 9, 10, 19, 20, 29)] == [0.25, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    cos = lr_factor({"type": "cosine", "warmup_steps": 0, "milestones": [], "gamma": 1.0,
                     "min_lr": 1e-5}, 1e-3, 100)
    assert cos(0) == pytest.approx(1.0)
    assert cos(50) == pytest.approx(0.01 + 0.99 * 0.5)
    assert cos(100) == pytest.approx(0.01)
    const = lr_factor({"type": "constant", "warmup_steps": 0, "milestones": [], "gamma": 1.0,
                       "min_lr": 0.0}, 1e-3, 10)
    assert const(9) == 1.0


def test_ema_ramps_its_decay_up_and_copies_buffers():
    model = torch.nn.BatchNorm1d(2)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(2.0)  # EMA starts at 1.0
        model.running_mean.fill_(5.0)
    ema.update(model, step=1)  # decay min(0.999, 2 / 11)
    d = 2 / 11
    assert ema.module.weight[0].item() == pytest.approx(d * 1.0 + (1 - d) * 2.0)
    assert ema.module.running_mean[0].item() == 5.0
    assert not ema.module.training and not ema.module.weight.requires_grad
