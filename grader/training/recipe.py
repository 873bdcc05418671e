"""The grader's training recipe, readable top to bottom (in the spirit of airbench).

Every submission is trained with this same recipe, so the accuracy rule compares models, not
training scripts. The hyperparameters live in one dict; the rubric (``[training]``) and a
submission's ``grade.toml`` may change them within the rubric's caps.

The recipe: SGD with Nesterov momentum, a linear warm-up then linear decay to zero over the
planned epochs (one-cycle), label smoothing, weight decay on conv/linear weights only, batch
norm left undecayed, channels_last, and bf16 autocast on CUDA. The data pipeline is the
student's own albumentations train transforms, applied in DataLoader worker processes.
Measured options, off by default (benchmarks/results/ablations.md): an EMA of the weights,
ghost batch norm (``bn_batch``), plain final epochs, and a whitening start of the
first convolution (``whiten_first_conv``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HYP: dict[str, float | int | bool] = {
    "epochs": 20,  # planned epochs: the schedule's length, and the cap
    "batch_size": 256,
    "lr": 0.2,  # peak learning rate (for batch_size; scaled linearly if it changes)
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "label_smoothing": 0.1,
    "bn_batch": 0,  # images per BatchNorm statistic ("ghost" batch norm: the batch in chunks); 0: the batch
    "warmup_fraction": 0.2,  # share of the steps spent rising from 0 to lr
    "ema_decay": 0.0,  # per-step decay of an average of the weights handed over (0: the raw weights)
    "plain_final_epochs": 0,  # last epochs on the pipeline's flips and fixed steps only (no shifts, holes)
    "whiten_first_conv": False,  # start the first 3-channel convolution as a whitening of image patches
    "bf16": True,  # bf16 autocast of the forward pass on CUDA (the CPU always runs fp32)
    "workers": 2,  # DataLoader worker processes running the student's transforms
    "seed": 0,
}


class OutOfTime(Exception):
    """The training's time limit was reached (``train``'s ``deadline``)."""


def to_model_input(out: object) -> torch.Tensor:
    """The grader's convention for what a transform pipeline returns.

    A CHW tensor (ToTensorV2) or an HWC numpy array; uint8 is scaled to 0..1, floats are
    taken as they are. The trusted evaluation applies the same conversion.
    """
    if isinstance(out, np.ndarray):
        if out.ndim == 2:
            out = out[:, :, None]
        t = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
    elif isinstance(out, torch.Tensor):
        t = out
    else:
        raise TypeError(f"the train transforms returned {type(out).__name__}, not an image array or tensor")
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    return t.float()


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators: the model's initialisation and the data order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_transform(transform: Callable | None, seed: int) -> None:
    """albumentations 2.x draws from generators of its own, seeded from the OS unless told."""
    setter = getattr(transform, "set_random_seed", None)
    if callable(setter):
        setter(seed % 2**32)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """The seed of one epoch's stream (0: the training process, 1 + i: data worker i).

    Every epoch starts from generators that depend on (seed, epoch) alone, not on the epochs before
    it, so a run resumed at epoch k gives the figures of a run that never stopped.
    """
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def _seed_worker(worker_id: int) -> None:
    # What the student's module draws when the worker starts is fixed too; each epoch then reseeds.
    info = torch.utils.data.get_worker_info()
    # Only ever the worker_init_fn of train()'s DataLoader: it runs in a worker, over AugmentedImages.
    assert info is not None and isinstance(info.dataset, AugmentedImages)
    seed_everything(info.seed % 2**32)
    seed_transform(info.dataset.transform, info.seed)


class EpochSampler(torch.utils.data.Sampler):
    """A shuffle drawn from (seed, epoch); yields (epoch, index) so that the workers know the epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 1

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        for i in torch.randperm(self.n, generator=generator).tolist():
            yield self.epoch, i


class AugmentedImages(torch.utils.data.Dataset):
    """uint8 HWC images through an albumentations-style callable ``transform(image=...)``.

    Indexed by (epoch, index): at the first image of an epoch a worker (or the training process,
    without workers) reseeds every generator the transforms may draw from with ``epoch_seed``, so
    the augmentations of an epoch do not depend on the epochs before it (persistent workers keep
    their generators from one epoch to the next otherwise).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None, seed: int = 0):
        self.images, self.labels, self.transform, self.seed = images, labels, transform, seed
        self.seeded_epoch = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, i = key
        if epoch != self.seeded_epoch:
            info = torch.utils.data.get_worker_info()
            stream = 1 + (info.id if info is not None else 0)
            seed_everything(epoch_seed(self.seed, epoch, stream))
            seed_transform(self.transform, epoch_seed(self.seed, epoch, stream))
            self.seeded_epoch = epoch
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return to_model_input(image), int(self.labels[i])


PLAIN_STEPS = {"HorizontalFlip", "Normalize", "ToFloat", "FromFloat", "ToTensorV2"}


def plain_pipeline(transform: Callable | None) -> Callable | None:
    """The student's albumentations pipeline with only its flips and its fixed steps kept.

    What the last ``plain_final_epochs`` train on: the crops, shifts, rotations and holes that keep a
    short schedule from fitting are left out, the input convention (Normalize, ToTensorV2) is kept.
    Anything but an albumentations Compose is returned as it is.
    """
    if type(transform).__name__ != "Compose" or not hasattr(transform, "transforms"):
        return transform
    import albumentations as A

    from grader.augment_inspect import leaves

    return A.Compose([t for t in leaves(transform) if type(t).__name__ in PLAIN_STEPS])


def first_image_conv(model: nn.Module) -> nn.Conv2d | None:
    """The model's first convolution, if it reads the 3 image channels with full (not grouped) filters."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module if module.in_channels == 3 and module.groups == 1 else None
    return None


@torch.no_grad()
def whiten_first_conv(
    model: nn.Module, images: np.ndarray, transform: Callable | None, seed: int, samples: int = 5000
) -> bool:
    """Start the first convolution as a whitening of the training images' patches (airbench's init).

    Its filters become the leading eigenvectors of the patches' covariance, each scaled by
    1/sqrt(eigenvalue) and used twice (+ and -, so a ReLU after it keeps both signs). The patches are
    the ones the model sees: the student's plain pipeline (flips, Normalize, ToTensorV2). The
    filters stay trainable. Returns False (and changes nothing) when the model has no such layer.
    """
    conv = first_image_conv(model)
    if conv is None:
        return False
    pipeline = plain_pipeline(transform)
    seed_transform(pipeline, seed)
    batch = [
        to_model_input(pipeline(image=image)["image"] if pipeline is not None else image) for image in images[:samples]
    ]
    x = torch.stack(batch)
    kh, kw = conv.kernel_size
    patches = F.unfold(x, (kh, kw), dilation=conv.dilation).transpose(1, 2).reshape(-1, 3 * kh * kw).double()
    patches -= patches.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))  # ascending
    filters = eigenvectors.T.flip(0) / (eigenvalues.flip(0).clamp_min(0) + 5e-4).sqrt()[:, None]
    half = math.ceil(conv.out_channels / 2)
    filters = filters.repeat(math.ceil(half / len(filters)), 1)[:half]  # more channels than patch dims: again
    weight = torch.cat([filters, -filters])[: conv.out_channels]
    conv.weight.copy_(weight.reshape(conv.weight.shape).to(conv.weight))
    return True


def uses_bf16(device: torch.device, hyp: dict) -> bool:
    """bf16 autocast on CUDA unless the rubric turns it off; fp32 on any other device."""
    return device.type == "cuda" and bool(hyp.get("bf16", True))


def make_optimizer(model: nn.Module, hyp: dict) -> torch.optim.Optimizer:
    # Decay only weights of conv/linear layers; BN affine and biases stay free (as airbench).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    free = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    lr = hyp["lr"] * hyp["batch_size"] / 256
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": hyp["weight_decay"]}, {"params": free, "weight_decay": 0.0}],
        lr=lr,
        momentum=hyp["momentum"],
        nesterov=bool(hyp["nesterov"]),
    )


def one_cycle(step: int, total: int, warmup_fraction: float) -> float:
    """Learning-rate factor: linear 0 -> 1 over the warm-up, then linear 1 -> 0."""
    warm = max(1, int(total * warmup_fraction))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


class WeightAverage:
    """An exponential moving average of every float tensor of a state_dict (weights and BN statistics).

    Kept as plain tensors, not a copy of the module, so it works on any ``nn.Module``. The decay
    ramps up as (1 + step) / (10 + step) so that the early average is not stuck at the initialisation.
    Integer buffers (BatchNorm's ``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if k not in self.state:
                continue
            if v.dtype.is_floating_point:
                self.state[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.state[k].copy_(v)


def weights_to_hand_over(model: nn.Module, average: WeightAverage | None) -> dict[str, torch.Tensor]:
    """The one set of weights the trusted side evaluates after an epoch: the average if there is one."""
    source = average.state if average is not None else model.state_dict()
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in source.items() if isinstance(v, torch.Tensor)}


@dataclass
class TrainState:
    """What a run carries from one epoch to the next: enough to resume it after ``epoch``.

    The model's tensors, the optimizer's (momentum buffers) and the weight average's; the data
    order and every generator are a function of (seed, epoch) and need no saving (``epoch_seed``).
    """

    epoch: int  # epochs done
    step: int  # optimizer steps done
    tensors: dict[str, torch.Tensor] = field(repr=False)  # "model/KEY", "optimizer/I/NAME", "average/KEY"
    average_updates: int = 0

    @classmethod
    def capture(
        cls, epoch: int, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, average: WeightAverage | None
    ) -> TrainState:
        def cpu(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to("cpu").contiguous().clone()

        tensors = {f"model/{k}": cpu(v) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        for index, entry in optimizer.state_dict()["state"].items():
            for name, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{index}/{name}"] = cpu(value)
        if average is not None:
            tensors.update({f"average/{k}": cpu(v) for k, v in average.state.items()})
        return cls(epoch, step, tensors, average.updates if average is not None else 0)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, average: WeightAverage | None) -> None:
        """Load the state into a model and optimizer built as the run built them."""

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

        saved = part("model/")
        current = model.state_dict()
        if set(saved) != {k for k, v in current.items() if isinstance(v, torch.Tensor)}:
            raise ValueError("the saved training state is of another model")
        model.load_state_dict({**current, **saved})  # non-tensor extra state stays as built
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in part("optimizer/").items():
            index, name = key.split("/", 1)
            state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict(dict(optimizer.state_dict(), state=state))
        if average is not None:
            for key, value in part("average/").items():
                if key in average.state:
                    average.state[key].copy_(value)
            average.updates = self.average_updates

    def to_bytes(self) -> bytes:
        """safetensors: tensors only, the counters as 0-d tensors (nothing that unpickles)."""
        from safetensors.torch import save

        counters = {"epoch": self.epoch, "step": self.step, "average_updates": self.average_updates}
        return save(self.tensors | {f"meta/{k}": torch.tensor(v, dtype=torch.int64) for k, v in counters.items()})

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainState:
        from safetensors.torch import load

        tensors = load(data)
        meta = {k[5:]: int(tensors.pop(k)) for k in [k for k in tensors if k.startswith("meta/")]}
        return cls(meta["epoch"], meta["step"], tensors, meta.get("average_updates", 0))


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_acc: float
    lr: float
    seconds: float
    images: int
    weights: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # what is handed over
    state: TrainState | None = field(default=None, repr=False)  # what a resumed run starts from

    def log_entry(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("weights", "state")}


def train(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    transform: Callable | None,
    hyp: dict,
    device: torch.device,
    outputs_are_probabilities: bool = False,
    progress: Callable[[int, int, float, float], None] | None = None,
    resume: TrainState | None = None,
    deadline: float | None = None,
) -> Generator[EpochStats, None, None]:
    """Train ``model`` in place; yield after every epoch so the caller can hand the weights over.

    The caller stops iterating to stop training (early stop once the trusted side has seen the
    target). ``outputs_are_probabilities``: the model ends in softmax, so the loss takes their log.
    ``resume``: the state after an epoch of an earlier run of the same model, data and hyp; the
    epochs after it give the figures that run would have given. ``deadline`` (``time.monotonic()``):
    past it, the next batch raises :class:`OutOfTime` (the epochs yielded so far stand).
    """
    seed = int(hyp["seed"])
    seed_everything(seed)
    cuda = device.type == "cuda"
    bf16 = uses_bf16(device, hyp)
    sampler = EpochSampler(len(labels), seed)

    def make_loader(pipeline: Callable | None) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            AugmentedImages(images, labels, pipeline, seed),
            batch_size=int(hyp["batch_size"]),
            sampler=sampler,
            drop_last=len(labels) > int(hyp["batch_size"]),
            num_workers=int(hyp["workers"]),
            pin_memory=cuda,
            persistent_workers=int(hyp["workers"]) > 0,
            generator=torch.Generator().manual_seed(seed),
            worker_init_fn=_seed_worker,
        )

    if resume is None and bool(hyp.get("whiten_first_conv", False)):
        whiten_first_conv(model, images, transform, seed)
    model.to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, hyp)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    average = WeightAverage(model, float(hyp["ema_decay"])) if float(hyp.get("ema_decay", 0)) > 0 else None
    step, first = 0, 1
    if resume is not None:
        resume.restore(model, optimizer, average)
        step, first = resume.step, resume.epoch + 1
    plain_from = int(hyp["epochs"]) - int(hyp.get("plain_final_epochs", 0)) + 1  # first epoch on plain_pipeline
    loader = make_loader(transform if first < plain_from else plain_pipeline(transform))
    total_steps = int(hyp["epochs"]) * len(loader)
    chunk = int(hyp.get("bn_batch", 0)) or int(hyp["batch_size"])

    def loss_of(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if outputs_are_probabilities:
            return F.nll_loss(torch.log(out.clamp_min(1e-12)), y)
        # cross_entropy also suits log_softmax outputs: log_softmax is idempotent.
        return F.cross_entropy(out, y, label_smoothing=float(hyp["label_smoothing"]))

    for epoch in range(first, int(hyp["epochs"]) + 1):
        if epoch == plain_from and first < plain_from:
            loader = make_loader(plain_pipeline(transform))  # the old loader's workers end with it
        sampler.epoch = epoch
        seed_everything(epoch_seed(seed, epoch))  # dropout and whatever the model draws
        model.train()
        start = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in loader:
            if deadline is not None and time.monotonic() > deadline:
                raise OutOfTime(f"the time limit ended epoch {epoch} after {seen} images")
            factor = one_cycle(step, total_steps, float(hyp["warmup_fraction"]))
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            # One optimizer step per batch; the forward passes go in chunks of bn_batch images, so
            # BatchNorm's statistics come from each chunk (gradients add up to the batch's mean).
            outs, batch_loss = [], 0.0
            for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    out = model(xs)
                out = out.float()
                loss = loss_of(out, ys) * (len(ys) / len(y))
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"the loss became {loss.item()} in epoch {epoch}")
                loss.backward()
                outs.append(out.detach())
                batch_loss += loss.item()
            out = torch.cat(outs)
            optimizer.step()
            if average is not None:
                average.update(model)
            step += 1
            loss_sum += batch_loss * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            if progress is not None:
                progress(epoch, seen, loss_sum / seen, correct / seen)
        yield EpochStats(
            epoch=epoch,
            train_loss=loss_sum / max(1, seen),
            train_acc=correct / max(1, seen),
            lr=base_lrs[0] * one_cycle(max(0, step - 1), total_steps, float(hyp["warmup_fraction"])),
            seconds=time.perf_counter() - start,
            images=seen,
            weights=weights_to_hand_over(model, average),
            state=TrainState.capture(epoch, step, model, optimizer, average),
        )
