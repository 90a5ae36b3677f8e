import pytest
import torch
import torch.nn.functional as F

from src.config import TrainConfig
from src.errors import UserError
from src.losses import asl, focal, make_loss, smooth

torch.manual_seed(0)
LOGITS = torch.randn(16, 5) * 3
Y = (torch.rand(16, 5) < 0.3).float()
PW = torch.tensor([1.0, 2.0, 4.0, 0.5, 8.0])


def test_focal_and_asl_reduce_to_weighted_bce():
    bce = F.binary_cross_entropy_with_logits(LOGITS, Y, pos_weight=PW)
    torch.testing.assert_close(focal(LOGITS, Y, PW, gamma=0.0), bce)
    torch.testing.assert_close(asl(LOGITS, Y, PW, gamma_pos=0.0, gamma_neg=0.0, clip=0.0), bce)
    torch.testing.assert_close(make_loss(TrainConfig(loss="bce"), PW)(LOGITS, Y), bce)


def test_focusing_down_weights_easy_examples():
    easy = torch.tensor([[6.0, -6.0]])
    hard = torch.tensor([[-1.0, 1.0]])
    y = torch.tensor([[1.0, 0.0]])
    ratio = lambda fn: (fn(easy, y) / F.binary_cross_entropy_with_logits(easy, y)).item()
    hard_ratio = lambda fn: (fn(hard, y) / F.binary_cross_entropy_with_logits(hard, y)).item()
    assert ratio(lambda a, b: focal(a, b, gamma=2.0)) < 0.01 < hard_ratio(lambda a, b: focal(a, b, gamma=2.0))
    # ASL's clip zeroes the loss of negatives already below the margin
    assert asl(torch.tensor([[-5.0]]), torch.tensor([[0.0]]), clip=0.05).item() == 0.0
    assert asl(torch.tensor([[2.0]]), torch.tensor([[0.0]]), clip=0.05).item() > 0.0


def test_pos_weight_and_label_smoothing():
    y1 = torch.ones(1, 1)
    logit = torch.tensor([[-1.0]])
    for name in ("bce", "focal", "asl"):
        plain = make_loss(TrainConfig(loss=name))(logit, y1)
        weighted = make_loss(TrainConfig(loss=name), torch.tensor([3.0]))(logit, y1)
        torch.testing.assert_close(weighted, 3 * plain)  # pos_weight scales the positive term
    torch.testing.assert_close(smooth(torch.tensor([0.0, 1.0]), 0.1), torch.tensor([0.05, 0.95]))
    smoothed = make_loss(TrainConfig(label_smoothing=0.2))(LOGITS, Y)
    torch.testing.assert_close(smoothed, F.binary_cross_entropy_with_logits(LOGITS, Y * 0.8 + 0.1))
    with pytest.raises(UserError, match="train.loss"):
        make_loss(TrainConfig(loss="hinge"))
    with pytest.raises(UserError, match="label_smoothing"):
        make_loss(TrainConfig(label_smoothing=1.0))
