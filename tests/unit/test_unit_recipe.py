"""The training recipe's pieces that do not need data: the weight average and what is handed over."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from grader.training import recipe


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
    )


def test_the_average_follows_the_formula_and_copies_integer_buffers():
    model = tiny_model()
    average = recipe.WeightAverage(model, decay=0.9)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    average.update(model)  # the first update uses the ramp: d = min(0.9, 2 / 11)
    d = 2 / 11
    assert torch.allclose(average.state["0.weight"], d * start + (1 - d) * (start + 1.0))
    assert int(average.state["1.num_batches_tracked"]) == 7
    for _ in range(200):
        average.update(model)
    assert torch.allclose(average.state["0.weight"], start + 1.0, atol=1e-6)  # converges to a still model


def test_without_an_average_the_raw_weights_are_handed_over():
    model = tiny_model()
    handed = recipe.weights_to_hand_over(model, None)
    assert handed.keys() == model.state_dict().keys()
    assert all(torch.equal(handed[k], v) for k, v in model.state_dict().items())
    handed["0.weight"].add_(1.0)  # a copy: the model is untouched
    assert not torch.equal(handed["0.weight"], model.state_dict()["0.weight"])


def test_training_with_an_average_hands_over_weights_that_differ_from_the_raw_ones():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (64, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 64)
    hyp = dict(recipe.HYP, epochs=2, batch_size=16, workers=0, ema_decay=0.9)
    model = tiny_model()
    stats = list(recipe.train(model, images, labels, None, hyp, torch.device("cpu")))
    assert [s.epoch for s in stats] == [1, 2]
    raw = model.state_dict()
    assert not torch.equal(stats[-1].weights["0.weight"], raw["0.weight"])
    assert "weights" not in stats[-1].log_entry() and stats[-1].log_entry()["epoch"] == 2


def test_the_plain_pipeline_keeps_the_flips_and_the_fixed_steps_only():
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    student = A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.OneOf([A.ShiftScaleRotate(p=1.0), A.RandomCrop(32, 32)], p=0.5),
            A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(16, 16), hole_width_range=(16, 16), p=1.0),
            A.Normalize(),
            ToTensorV2(),
        ]
    )
    plain = recipe.plain_pipeline(student)
    assert [type(t).__name__ for t in plain.transforms] == ["HorizontalFlip", "Normalize", "ToTensorV2"]
    image = np.full((32, 32, 3), 100, dtype=np.uint8)
    out = plain(image=image)["image"]
    assert out.shape == (3, 32, 32) and float(out.std(dim=(1, 2)).max()) == 0.0  # no hole: a flat image stays flat
    not_albumentations = object()
    assert recipe.plain_pipeline(not_albumentations) is not_albumentations


class CountingPipeline:
    """A stand-in for a Compose: counts the images it sees."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray) -> dict:
        self.calls += 1
        return {"image": image}


def test_the_last_epochs_train_on_the_plain_pipeline(monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (32, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 32)
    student, plain = CountingPipeline(), CountingPipeline()
    monkeypatch.setattr(recipe, "plain_pipeline", lambda transform: plain if transform is student else transform)
    hyp = dict(recipe.HYP, epochs=3, batch_size=16, workers=0, plain_final_epochs=1)
    list(recipe.train(tiny_model(), images, labels, student, hyp, torch.device("cpu")))
    assert (student.calls, plain.calls) == (64, 32)  # epochs 1-2 on the student's pipeline, epoch 3 plain
    student.calls = plain.calls = 0
    hyp["plain_final_epochs"] = 0
    list(recipe.train(tiny_model(), images, labels, student, hyp, torch.device("cpu")))
    assert (student.calls, plain.calls) == (96, 0)


class BatchSizes(nn.Module):
    """Records the size of every batch its forward sees (what a BatchNorm computes its statistics on)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return x


def test_bn_batch_splits_the_forward_passes_but_keeps_one_step_per_batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (32, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 32)
    recorder = BatchSizes()
    model = nn.Sequential(recorder, tiny_model())
    hyp = dict(recipe.HYP, epochs=1, batch_size=16, workers=0, bn_batch=4)
    (stats,) = recipe.train(model, images, labels, None, hyp, torch.device("cpu"))
    assert recorder.sizes == [4] * 8 and stats.images == 32


def test_bn_batch_without_batchnorm_gives_the_whole_batch_gradient():
    """Chunked forward passes add up to the batch's mean loss: without BatchNorm, the same weights."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (32, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 32)

    def trained(bn_batch: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
        hyp = dict(recipe.HYP, epochs=2, batch_size=16, workers=0, bn_batch=bn_batch)
        *_, last = recipe.train(model, images, labels, None, hyp, torch.device("cpu"))
        return last.weights

    whole, chunked = trained(0), trained(4)
    assert whole.keys() == chunked.keys()
    for k in whole:
        assert torch.allclose(whole[k], chunked[k], atol=1e-5), k


def test_bn_batch_changes_what_batchnorm_learns_from():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (32, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 32)
    runs = []
    for bn_batch in (0, 4):
        hyp = dict(recipe.HYP, epochs=1, batch_size=16, workers=0, bn_batch=bn_batch)
        (stats,) = recipe.train(tiny_model(), images, labels, None, hyp, torch.device("cpu"))
        runs.append(stats.weights)
    assert not torch.allclose(runs[0]["1.running_var"], runs[1]["1.running_var"])


def test_bf16_autocast_only_on_cuda_and_only_when_the_rubric_keeps_it():
    assert recipe.uses_bf16(torch.device("cuda"), recipe.HYP)
    assert not recipe.uses_bf16(torch.device("cuda"), dict(recipe.HYP, bf16=False))
    assert not recipe.uses_bf16(torch.device("cpu"), recipe.HYP)


def dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3),  # draws from the training process's generator
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
    )


@pytest.mark.parametrize("workers", [0, 1])
def test_a_run_resumed_after_an_epoch_gives_the_figures_of_one_that_never_stopped(workers):
    """Data order, augmentations, dropout, momentum and the average all carry over exactly."""
    import albumentations as A

    rng = np.random.default_rng(2)
    images = rng.integers(0, 255, (64, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 64)

    def pipeline() -> A.Compose:
        return A.Compose([A.HorizontalFlip(p=0.5), A.CoarseDropout(num_holes_range=(1, 1), p=0.5)])

    hyp = dict(recipe.HYP, epochs=3, batch_size=16, workers=workers, ema_decay=0.9)
    straight = list(recipe.train(dropout_model(), images, labels, pipeline(), hyp, torch.device("cpu")))
    first = next(recipe.train(dropout_model(), images, labels, pipeline(), hyp, torch.device("cpu")))
    assert first.state is not None and first.state.epoch == 1
    saved = recipe.TrainState.from_bytes(first.state.to_bytes())  # through the file format
    resumed = list(recipe.train(dropout_model(), images, labels, pipeline(), hyp, torch.device("cpu"), resume=saved))
    assert [s.epoch for s in resumed] == [2, 3]
    for a, b in zip(straight[1:], resumed, strict=True):
        assert (a.train_loss, a.train_acc, a.lr) == (b.train_loss, b.train_acc, b.lr)
        assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)


def test_a_state_of_another_model_is_refused():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 255, (32, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 32)
    hyp = dict(recipe.HYP, epochs=2, batch_size=16, workers=0)
    first = next(recipe.train(tiny_model(), images, labels, None, hyp, torch.device("cpu")))
    with pytest.raises(ValueError, match="another model"):
        next(recipe.train(dropout_model(), images, labels, None, hyp, torch.device("cpu"), resume=first.state))


def test_whitening_makes_the_first_convolution_decorrelate_the_image_patches():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (64, 8, 8, 1))
    images = np.clip(gray + rng.integers(-20, 20, (64, 8, 8, 3)), 0, 255).astype(np.uint8)  # correlated channels
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    assert recipe.whiten_first_conv(model, images, None, seed=0)
    x = torch.stack([recipe.to_model_input(image) for image in images])
    out = model[0](x).detach().transpose(0, 1).reshape(8, -1).double()
    cov = torch.cov(out[:4])
    assert torch.allclose(cov, torch.eye(4, dtype=torch.double), atol=0.05)  # leading 4: white
    assert torch.allclose(out[4:], -out[:4])  # and their negatives, so a ReLU keeps both signs


def test_whitening_leaves_a_model_without_a_plain_first_image_convolution_alone():
    grouped = nn.Sequential(nn.Conv2d(3, 6, 3, groups=3), nn.Flatten(), nn.LazyLinear(10))
    before = grouped[0].weight.detach().clone()
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    assert not recipe.whiten_first_conv(grouped, images, None, seed=0)
    assert torch.equal(grouped[0].weight, before)
