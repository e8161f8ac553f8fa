import torch

from latune.core.labels import class_loss, la_targets, predict, soft_cross_entropy, target_loss


def test_transformed_and_untransformed_targets():
    y = torch.tensor([0, 2, 1])
    z = torch.tensor([1, -1, 0])
    t = la_targets(y, z, num_classes=3, num_extra=2, delta=0.25)
    assert t.shape == (3, 5)
    assert torch.allclose(t.sum(1), torch.ones(3))
    assert torch.equal(t[0], torch.tensor([0.75, 0, 0, 0, 0.25]))
    assert torch.equal(t[1], torch.tensor([0, 0, 1.0, 0, 0]))  # untransformed: plain one-hot, zeros for M
    assert torch.equal(t[2], torch.tensor([0, 0.75, 0, 0.25, 0]))


def test_delta_zero_is_one_hot():
    y = torch.tensor([0, 1, 2, 1])
    t = la_targets(y, torch.tensor([0, 1, -1, 2]), num_classes=3, num_extra=3, delta=0.0)
    assert torch.equal(t[:, :3], torch.nn.functional.one_hot(y, 3).float())
    assert torch.equal(t[:, 3:], torch.zeros(4, 3))


def test_soft_cross_entropy_equals_cross_entropy_on_one_hot():
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 5
    t = torch.nn.functional.one_hot(y, 5).float()
    assert torch.allclose(soft_cross_entropy(logits, t), torch.nn.functional.cross_entropy(logits, y))


def test_soft_cross_entropy_known_value():
    # uniform logits over 4 outputs: loss = log 4 whatever the target distribution
    t = torch.tensor([[0.9, 0.0, 0.1, 0.0]])
    assert torch.isclose(soft_cross_entropy(torch.zeros(1, 4), t), torch.log(torch.tensor(4.0)))


def test_prediction_ignores_transformation_logits():
    logits = torch.tensor([[0.1, 0.5, 9.0, 9.0], [2.0, 1.0, 0.0, 5.0]])
    assert predict(logits, num_classes=2).tolist() == [1, 0]


def test_the_attack_losses_score_the_indexed_images_summed():
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))  # K=3 classes, M=2
    y, index = torch.tensor([2, 0, 1, 1]), torch.tensor([3, 0, 1])
    expected = torch.nn.functional.cross_entropy(logits[:, :3], y[index], reduction="sum")
    assert torch.allclose(class_loss(y, 3)(logits, index), expected)
    targets = la_targets(y, torch.tensor([1, -1, 0, 0]), 3, 2, 0.2)
    assert torch.allclose(target_loss(targets)(logits, index), soft_cross_entropy(logits, targets[index]) * 3)
