"""Training one run config: optimizer and scheduler factories, one epoch, evaluation, and `fit`.

The same `fit` trains a trial and a production run (`tune train`), so an exported config reproduces its trial.
The hot loop draws batches by index from tensors already on the device, augments them there (tuner.augment) and
never waits on the device: the loss is summed there and read once per epoch.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from tuner.augment import NO_AUGMENT, Augment
from tuner.datasets import Images, Splits
from tuner.errors import TuneError
from tuner.models import build_model
from tuner.models.hubs import parameter_groups
from tuner.spec import RunConfig
from tuner.spec.params import BATCH_SCHEDULERS

EVAL_BATCH = 2048
BATCH_REPORT_SECONDS = 1.0  # how often train_epoch tells its on_batch hook how far the epoch is
FUSED_OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad")  # torch has fused CUDA kernels for these


class Diverged(Exception):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(f"training loss became {loss} in epoch {epoch}")
        self.epoch = epoch


def resolve_device(name: str = "auto") -> torch.device:
    """The device to train on: `auto` takes CUDA, then MPS, then the CPU; others must be present."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TuneError("--device cuda: no CUDA GPU is visible to torch; use --device cpu or --device auto")
    if name == "mps" and not has_mps:
        raise TuneError("--device mps: Apple's MPS backend is not available here; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise TuneError(f"unknown device {name!r}: use auto, cpu, cuda or mps")
    return torch.device(name)


def make_optimizer(config: RunConfig, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
                   device: torch.device) -> torch.optim.Optimizer:
    kwargs: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    if device.type == "cuda" and config.optimizer in FUSED_OPTIMIZERS:
        kwargs["fused"] = True
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=config.momentum, nesterov=config.nesterov, **kwargs)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, momentum=config.momentum, **kwargs)
    cls: type[torch.optim.Optimizer]
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad,
           "nadam": torch.optim.NAdam}[config.optimizer]
    return cls(params, **kwargs)


def make_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer,
                   batches: int = 1) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of a run of `config.epochs` epochs of `batches` batches: exponential and step are
    stepped after each epoch, exp-warmup, cosine and onecycle after each batch (`per_batch`); `none` keeps the rate
    constant.

    exp-warmup: a linear warm-up over the first `warmup` share of the batches, then the rate multiplied by `gamma`
    per epoch, a little after every batch (it ends at lr * gamma ** (epochs * (1 - warmup))).
    cosine: a linear warm-up over the first `warmup` share of the batches, then a half cosine down to 0.
    onecycle: torch's OneCycleLR (up from lr/25 over the `warmup` share, then down to lr/2.5e5), cycling Adam's
    beta1 (0.95 -> 0.85 -> 0.95); the momentum of SGD and RMSprop stays the searched one.
    onecycle-gamma: the same, down to lr * gamma ** epochs instead (gamma: the mean decay per epoch)."""
    total = max(1, batches * config.epochs)
    warm = round(config.warmup * total)
    if config.scheduler in ("cosine", "exp-warmup"):
        per_epoch = max(1, batches)
        cosine = config.scheduler == "cosine"

        def factor(step: int) -> float:  # the lr of batch `step` (0-based), relative to `lr`
            if step < warm:
                return (step + 1) / warm
            if cosine:
                return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            return float(config.gamma ** ((step - warm) / per_epoch))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if config.scheduler in ("onecycle", "onecycle-gamma"):
        share = config.warmup
        if abs(share * total - 1) < 1e-9:  # OneCycleLR divides by zero when the warm-up ends on the first batch
            share *= 1.001
        # onecycle-gamma ends at lr * gamma ** epochs: OneCycleLR's last lr is (lr / div_factor) / final_div_factor
        final = 1e4 if config.scheduler == "onecycle" else 1 / (25 * max(config.gamma ** config.epochs, 1e-300))
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=share,
                                                   cycle_momentum="betas" in optimizer.defaults,
                                                   final_div_factor=final)
    if config.scheduler == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma)
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def per_batch(config: RunConfig) -> bool:
    """Whether the schedule steps after each batch (cosine, onecycle) rather than after each epoch."""
    return config.scheduler in BATCH_SCHEDULERS


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 mixed precision on CUDA; full precision elsewhere (CPU autocast is slower on most CPUs)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: Images, batch_size: int,
                generator: torch.Generator, augment: Augment = NO_AUGMENT,
                label_smoothing: float = 0.0, on_batch: Callable[[int, int], None] | None = None,
                schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
                class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """One pass over `data` in a seeded random order, each batch augmented (and mixed) on the device by `augment`;
    returns the summed (smoothed, `class_weight`-weighted) loss, still on the device. `on_batch(done, batches)`
    hears the progress as the epoch starts and then every BATCH_REPORT_SECONDS, timed on the host clock (never a
    device sync). `schedule` (a per-batch one) is stepped after each batch: host arithmetic only."""
    model.train()
    device = data.compute_device
    loss_sum = torch.zeros((), device=device)
    batches, reported = -(-len(data) // batch_size), -math.inf
    criterion = functools.partial(nn.functional.cross_entropy, weight=class_weight, label_smoothing=label_smoothing)
    for done, (x, y) in enumerate(data.batches(batch_size, generator)):
        if on_batch is not None and time.monotonic() - reported >= BATCH_REPORT_SECONDS:
            reported = time.monotonic()
            on_batch(done, batches)
        if augment:
            x = augment(x, generator)
        if mixing := augment.mixes:  # each image `share` its own label's, the rest its partner's
            x, partner, share = augment.mix(x, y, generator)
        with _autocast(device):
            out = model(x)
            loss = criterion(out, y) if not mixing else torch.lerp(criterion(out, partner), criterion(out, y), share)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        loss_sum += loss.detach() * len(y)
    return loss_sum


@torch.inference_mode()
def evaluate(model: nn.Module, data: Images, num_classes: int = 0) -> tuple[float, float, dict[str, float]]:
    """(accuracy, mean cross-entropy, class-balanced scores) of `model` on `data`, with one host sync at the end.
    The scores (balanced_accuracy, macro_f1) come from the confusion matrix of `num_classes` classes (0: none)."""
    model.eval()
    device = data.compute_device
    correct = torch.zeros((), device=device, dtype=torch.int64)
    loss_sum = torch.zeros((), device=device)
    confusion = torch.zeros(num_classes * num_classes, device=device, dtype=torch.int64)
    for x, y in data.batches(EVAL_BATCH):
        with _autocast(device):
            logits = model(x)
        predicted = logits.argmax(1)
        correct += (predicted == y).sum()
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        if num_classes:
            confusion += torch.bincount(y * num_classes + predicted, minlength=num_classes * num_classes)
    correct_count, loss_total = correct.item(), loss_sum.item()
    scores = class_scores(confusion.view(num_classes, num_classes).cpu()) if num_classes else {}
    return correct_count / len(data), loss_total / len(data), scores


def class_scores(confusion: torch.Tensor) -> dict[str, float]:
    """balanced_accuracy (the mean of the per-class recalls) and macro_f1 (the mean of the per-class F1 scores)
    of a confusion matrix (rows: true class, columns: predicted), over the classes present."""
    confusion = confusion.double()
    hits, actual, predicted = confusion.diag(), confusion.sum(1), confusion.sum(0)
    present = actual > 0
    recall = hits[present] / actual[present]
    f1 = 2 * hits[present] / (actual[present] + predicted[present])
    return {"balanced_accuracy": float(recall.mean()), "macro_f1": float(f1.mean())}


@torch.inference_mode()
def predictions(model: nn.Module, data: Images) -> torch.Tensor:
    """The class `model` predicts for each image of `data`, in full precision, on the CPU (one host sync)."""
    model.eval()
    parts = [model(x).argmax(1) for x, _ in data.batches(EVAL_BATCH)]
    return torch.cat(parts).cpu()


@dataclass
class Epoch:
    """What one epoch measured."""

    epoch: int  # 1-based
    train_loss: float
    val_accuracy: float
    val_loss: float
    seconds: float

    val_scores: dict[str, float] = field(default_factory=dict)  # balanced_accuracy, macro_f1

    def metric(self, name: str) -> float:
        if name in self.val_scores:
            return self.val_scores[name]
        return self.val_accuracy if name == "accuracy" else self.val_loss


@dataclass
class FitResult:
    model: nn.Module
    history: list[Epoch] = field(default_factory=list)
    test_accuracy: float | None = None
    test_predicted: torch.Tensor | None = None  # the final test's predicted class of each test image
    seconds: float = 0.0


@dataclass
class TrainState:
    """Everything `fit` needs to go on after epoch `epoch` as if it had never stopped: the weights, the optimizer's
    and the schedule's state, the RNG states (the generator that orders and augments batches, torch's global RNG
    that drives dropout, CUDA's on a GPU) and the history so far. `config` is the run it belongs to
    (RunConfig.to_dict()). On the same device and CPU thread count a resumed run ends bit for bit as an
    uninterrupted one."""

    config: dict[str, Any]
    epoch: int
    history: list[Epoch]
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    generator: torch.Tensor
    rng: torch.Tensor
    cuda_rng: torch.Tensor | None = None


def _state(config: RunConfig, history: list[Epoch], model: nn.Module, optimizer: torch.optim.Optimizer,
           scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator) -> TrainState:
    """The run's state now, by reference: a saver must copy or serialize it before training goes on."""
    device = generator.device
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return TrainState(config.to_dict(), len(history), list(history), model.state_dict(), optimizer.state_dict(),
                      scheduler.state_dict(), generator.get_state(), torch.get_rng_state(), cuda_rng)


def _restore(state: TrainState, config: RunConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator) -> list[Epoch]:
    """Put `state` back into the freshly built run; returns the history it had."""
    if not config.same_as(state.config) or not 0 < state.epoch < config.epochs:
        raise ValueError(f"a state after epoch {state.epoch} of another run config cannot continue this run")
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    generator.set_state(state.generator)
    torch.set_rng_state(state.rng)
    if state.cuda_rng is not None and generator.device.type == "cuda":
        torch.cuda.set_rng_state(state.cuda_rng, generator.device)
    return list(state.history)


def balancing_weights(labels: torch.Tensor, num_classes: int, device: torch.device) -> torch.Tensor:
    """Loss weights that make each class count the same: inversely proportional to its training images, mean 1."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes).double().clamp(min=1)
    return (counts.sum() / (num_classes * counts)).float().to(device)


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def compiled(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` through torch.compile: on CUDA with autotuned kernels; CUDA graphs are left out because every
    trial builds a new model, and graphs captured per model cost more than they save in short trials."""
    mode = "max-autotune-no-cudagraphs" if device.type == "cuda" else None
    return cast(nn.Module, torch.compile(model, backend=COMPILE_BACKEND, mode=mode))


COMPILE_BACKEND = "inductor"  # tests swap in "eager": the same graph capture without minutes of C++ builds


def fit(config: RunConfig, splits: Splits, on_epoch: Callable[[Epoch], None] | None = None,
        test: bool = True, *, resume: TrainState | None = None,
        on_state: Callable[[TrainState], None] | None = None,
        on_batch: Callable[[int, int, int], None] | None = None) -> FitResult:
    """Train `config` on `splits` (already on the device), evaluating on validation after every epoch.

    `on_epoch` sees each epoch's result and may raise to stop (Optuna's TrialPruned does). Raises `Diverged`
    when the loss becomes NaN or infinite. The test split is evaluated once, at the end, when `test` is set.
    `config.compile` runs the model through torch.compile (the returned model is the plain module, for saving).
    `resume` continues a run from its saved state (its epochs are in the history, not shown to `on_epoch` again);
    `on_state` is handed the state after each epoch but the last, once `on_epoch` let it go on.
    `on_batch(epoch, done, batches)` hears the progress within an epoch about once a second (train_epoch).
    """
    # --- setup: seeded init, optimizer, schedule
    started = time.perf_counter()
    device = splits.train.compute_device
    torch.manual_seed(config.seed)
    model = build_model(config, splits.shape, splits.num_classes, splits.mean, splits.std)
    model = model.to(device)
    # conv models train channels-last (faster on CPUs too) and are evaluated as saved: tested labels = served ones
    layout = torch.channels_last if has_convolutions(model) else torch.contiguous_format
    optimizer = make_optimizer(config, parameter_groups(model, config.lr, config.backbone_lr if config.pretrained
                                                        else 1.0), device)
    scheduler = make_scheduler(config, optimizer, -(-len(splits.train) // config.batch_size))
    batch_schedule = scheduler if per_batch(config) else None
    generator = torch.Generator(device=device).manual_seed(config.seed)
    augment = Augment.of(config)
    class_weight = balancing_weights(splits.train.y, splits.num_classes, device) if config.class_weights else None
    result = FitResult(model)
    if resume is not None:
        result.history = _restore(resume, config, model, optimizer, scheduler, generator)
    run_model = compiled(model, device) if config.compile else model

    # --- train, evaluate and report each epoch
    for epoch in range(len(result.history) + 1, config.epochs + 1):
        epoch_start = time.perf_counter()
        batch_hook = None if on_batch is None else functools.partial(on_batch, epoch)
        model.to(memory_format=layout)
        loss_sum = train_epoch(run_model, optimizer, splits.train, config.batch_size, generator, augment,
                               config.label_smoothing, batch_hook, batch_schedule, class_weight)
        if batch_schedule is None:
            scheduler.step()
        train_loss = loss_sum.item() / len(splits.train)
        if not math.isfinite(train_loss):
            raise Diverged(epoch, train_loss)
        model.to(memory_format=torch.contiguous_format)
        val_accuracy, val_loss, scores = evaluate(run_model, splits.val, splits.num_classes)
        record = Epoch(epoch, train_loss, val_accuracy, val_loss, time.perf_counter() - epoch_start, scores)
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if on_state is not None and epoch < config.epochs:
            on_state(_state(config, result.history, model, optimizer, scheduler, generator))

    # --- final test
    if test:
        # fp32 and the plain module: the model as it is saved, and as `tune predict` and `tune convert` run it
        result.test_predicted = predictions(model, splits.test)
        result.test_accuracy = int((result.test_predicted == splits.test.y.cpu()).sum()) / len(splits.test)
    result.seconds = time.perf_counter() - started
    return result
