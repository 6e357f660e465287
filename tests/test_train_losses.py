"""Training losses: pixel losses, VGG19 perceptual loss options, GAN losses."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.vgg import cfgs, make_layers

from sr.train.losses import AdversarialLoss, LossConfigError, PerceptualLoss, charbonnier, pixel_loss


def test_pixel_losses():
    a = torch.tensor([0.0, 1.0, 0.5])
    b = torch.tensor([0.0, 0.0, 1.0])
    assert pixel_loss("l1")(a, b).item() == pytest.approx(0.5)
    assert pixel_loss("mse")(a, b).item() == pytest.approx((1 + 0.25) / 3)
    eps = 1e-3
    expected = (eps + math.sqrt(1 + eps ** 2) + math.sqrt(0.25 + eps ** 2)) / 3
    assert charbonnier(a, b, eps).item() == pytest.approx(expected)
    assert pixel_loss("charbonnier", eps)(a, b).item() == pytest.approx(expected)
    with pytest.raises(LossConfigError):
        pixel_loss("huber")


@pytest.mark.parametrize("layer, before, n", [("conv5_4", True, 35), ("conv5_4", False, 36),
                                              ("conv1_1", True, 1), ("conv2_2", False, 9)])
def test_vgg_layer_cut(layer, before, n):
    loss = PerceptualLoss(layer, before, weights="random")
    assert len(loss.features) == n
    assert isinstance(loss.features[-1], torch.nn.Conv2d if before else torch.nn.ReLU)


def test_vgg_weights_from_a_file_and_clear_errors(tmp_path):
    torch.manual_seed(0)
    features = make_layers(cfgs["E"])
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    loss = PerceptualLoss("conv2_2", weights=str(path))
    assert torch.equal(loss.features[0].weight, features[0].weight)
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.training  # a fixed feature extractor, even inside a model in train mode
    with pytest.raises(LossConfigError, match="no file"):
        PerceptualLoss(weights=str(tmp_path / "missing.pth"))
    with pytest.raises(LossConfigError, match="no layer"):
        PerceptualLoss("conv6_1", weights="random")


def test_perceptual_loss_normalises_rescales_and_trains_only_the_prediction():
    torch.manual_seed(0)
    loss = PerceptualLoss("conv2_2", weights="random")
    scaled = PerceptualLoss("conv2_2", weights="random", feature_scale=1 / 12.75)
    scaled.load_state_dict(loss.state_dict())
    target = torch.rand(2, 3, 16, 16)
    pred = torch.rand(2, 3, 16, 16, requires_grad=True)
    value = loss(pred, target)
    assert scaled(pred, target).item() == pytest.approx(value.item() / 12.75 ** 2, rel=1e-4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    by_hand = F.mse_loss(loss.features((pred - mean) / std), loss.features((target - mean) / std))
    assert value.item() == pytest.approx(by_hand.item(), rel=1e-5)
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_adversarial_losses():
    real = torch.tensor([[2.0], [1.0]])
    fake = torch.tensor([[-1.0], [0.5]])
    bce = lambda x, t: F.binary_cross_entropy_with_logits(x, torch.full_like(x, t))  # noqa: E731
    gan = AdversarialLoss("gan")
    assert gan.generator(None, fake).item() == pytest.approx(bce(fake, 1.0).item())
    assert gan.discriminator(real, fake).item() == pytest.approx((bce(real, 1.0) + bce(fake, 0.0)).item())
    ra = AdversarialLoss("ragan")
    rel_real, rel_fake = real - fake.mean(), fake - real.mean()
    assert ra.generator(real, fake).item() == pytest.approx(
        0.5 * (bce(rel_real, 0.0) + bce(rel_fake, 1.0)).item())
    assert ra.discriminator(real, fake).item() == pytest.approx(
        0.5 * (bce(rel_real, 1.0) + bce(rel_fake, 0.0)).item())
    # a discriminator that separates well has a low loss, the generator a high one
    assert gan.discriminator(torch.full((4, 1), 5.0), torch.full((4, 1), -5.0)) < 0.1
    assert gan.generator(None, torch.full((4, 1), -5.0)) > 4.0
    with pytest.raises(LossConfigError):
        AdversarialLoss("wgan")
