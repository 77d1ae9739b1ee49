"""Models from anywhere: torchvision, timm and the user's own code, pretrained weights, searched model arguments,
and augmentation; each trains as a trial, and the user's model exports and retrains from another directory."""

from __future__ import annotations

import json
import sys
import urllib.error

import pytest
import torch
from torch import nn

from tuner.augment import Augment, flip, translate
from tuner.datasets import Images, Splits
from tuner.errors import TuneError
from tuner.models import Standardize, build_model, hubs
from tuner.spec import Choices, Fixed, Range, RunConfig, SpecError, StudySpec, load_spec
from tuner.testing import write_idx_dataset
from tuner.train import fit

IMAGENET_MEAN = (0.485, 0.456, 0.406)

USER_MODULE = '''
from torch import nn


def make_net(input_shape, num_classes, width=8):
    channels = input_shape[0]
    return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(width * 16, num_classes))
'''


def tiny_splits(channels: int = 1, size: int = 16, n: int = 40, classes: int = 4) -> Splits:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)
    y = torch.arange(n) % classes
    part = Images(x, y)
    names = tuple(str(i) for i in range(classes))
    return Splits(part, part, part, (0.5,) * channels, (0.25,) * channels, names)


@pytest.fixture
def small_data_dir(tmp_path_factory):
    """Fashion-MNIST-shaped synthetic data, small enough for a 1-epoch ResNet trial on the CPU."""
    return write_idx_dataset(tmp_path_factory.mktemp("small"), n_train=60, n_test=20)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A model module with a unique name in its own folder (not importable from elsewhere)."""
    name = f"usernet_{tmp_path.name.replace('-', '_')}"
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield name, folder
    sys.modules.pop(name, None)


# --- trials of torchvision, timm and user models

@pytest.mark.parametrize("ref", ["torchvision:resnet18", "torchvision:mobilenet_v3_small"])
def test_torchvision_models_train_on_small_grayscale_images(ref):
    splits = tiny_splits()
    result = fit(RunConfig(model=ref, epochs=1, batch_size=20, lr=1e-3, flip=True, translate=2), splits)
    model = result.model
    assert isinstance(model[0], Standardize) and model[0].mean.shape == (1, 1, 1, 1)
    assert model(splits.test.x[:3]).shape == (3, 4)
    assert result.test_accuracy is not None


@pytest.mark.parametrize("ref", ["torchvision:resnet18", "torchvision:mobilenet_v3_small"])
def test_torchvision_trials_through_tune_start(cli, small_data_dir, storage_url, tmp_path, ref):
    spec = tmp_path / "tv.yaml"
    spec.write_text(f"name: tv\nmodel: {ref}\nepochs: 1\nvalidation: 0.2\nsampler: random\n"
                    "search: {optimizer: adam, lr: 0.001, batch_size: 32, scheduler: none, flip: [true, false]}\n")
    result = cli("start", "--spec", spec, "--trials", 1, "--seed", 0, "--data-dir", small_data_dir,
                 "--storage", storage_url, "--device", "cpu", "--keep-top", 0)
    assert result.exit_code == 0, result.output
    shown = json.loads(cli("show", "tv", "--storage", storage_url, "--format", "json").stdout)
    assert shown["model"] == ref and shown["best"]["user_attrs"]["config"]["model"] == ref


def test_timm_model_trains():
    pytest.importorskip("timm")
    result = fit(RunConfig(model="timm:resnet18", epochs=1, batch_size=20, model_args={"drop_rate": 0.1}),
                 tiny_splits(channels=3))
    assert result.model(torch.zeros(2, 3, 16, 16, dtype=torch.uint8)).shape == (2, 4)


def test_timm_absent_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(TuneError, match=r"model timm:resnet18 needs timm, which is not installed: pip install"):
        build_model(RunConfig(model="timm:resnet18"), (1, 16, 16), 4, (0.5,), (0.25,))


def test_user_model_with_a_searched_argument_exports_and_retrains_elsewhere(cli, small_data_dir, storage_url,
                                                                          tmp_path, user_module, monkeypatch):
    name, folder = user_module
    spec = folder / "mine.yaml"  # beside the module: found there whatever the current directory
    spec.write_text(f"name: mine\nmodel: {name}:make_net\nepochs: 1\nvalidation: 0.2\nsampler: random\n"
                    "search: {optimizer: adam, lr: 0.003, batch_size: 16, scheduler: none, "
                    "model.width: [4, 6], label_smoothing: {low: 0.0, high: 0.2}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("start", "--spec", spec, "--trials", 2, "--seed", 1, "--data-dir", small_data_dir,
                 "--storage", storage_url, "--device", "cpu", "--keep-top", 0)
    assert result.exit_code == 0, result.output
    best = json.loads(cli("best", "mine", "--storage", storage_url, "--format", "json").stdout)
    assert best["params"]["model.width"] in (4, 6)
    assert best["user_attrs"]["config"]["model_args"] == {"width": best["params"]["model.width"]}
    assert best["user_attrs"]["config"]["model_dir"] == str(folder)

    assert cli("export", "mine", "--storage", storage_url, "-o", "best.yaml").exit_code == 0
    text = (elsewhere / "best.yaml").read_text()
    assert f"model: {name}:make_net" in text and "model_args: {width: " in text
    # A fresh process: the module is neither imported nor on sys.path; the export says where it is.
    sys.modules.pop(name, None)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(folder)])
    third = tmp_path / "third"
    third.mkdir()
    monkeypatch.chdir(third)
    trained = cli("train", elsewhere / "best.yaml", "--data-dir", small_data_dir, "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    metrics = json.loads((third / "runs" / "best" / "metrics.json").read_text())
    assert abs(metrics["test_accuracy"] - best["user_attrs"]["test_accuracy"]) <= 1e-6


def test_user_model_that_cannot_be_found_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("start", "--model", "nowhere_net:build", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert result.exit_code == 2
    assert "Error: cannot find module 'nowhere_net': put nowhere_net.py (or the package nowhere_net/) in" \
        in result.output
    assert not (tmp_path / "s.db").exists()
    config = RunConfig(model="nowhere_net:build", model_dir=str(tmp_path))
    with pytest.raises(TuneError, match=r"cannot import nowhere_net .*add that folder to PYTHONPATH"):
        build_model(config, (1, 16, 16), 4, (0.5,), (0.25,))


def test_user_model_errors_name_the_fix(user_module):
    name, folder = user_module
    config = RunConfig(model=f"{name}:make_net", model_dir=str(folder), model_args={"depth": 3})
    with pytest.raises(TuneError, match=r"got an unexpected keyword argument 'depth'.*model.NAME"):
        build_model(config, (1, 16, 16), 4, (0.5,), (0.25,))
    with pytest.raises(TuneError, match=r"has no function missing"):
        build_model(config.replace(model=f"{name}:missing"), (1, 16, 16), 4, (0.5,), (0.25,))


def test_model_too_big_for_the_images_is_one_line():
    with pytest.raises(TuneError, match=r"model torchvision:convnext_tiny cannot take 1x16x16 images"):
        build_model(RunConfig(model="torchvision:convnext_tiny"), (1, 16, 16), 4, (0.5,), (0.25,))


# --- pretrained weights, from caches the test writes

def test_torchvision_pretrained_weights_from_torch_hub_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hubs.torchvision_state.cache_clear()
    config = RunConfig(model="torchvision:resnet18", pretrained=True)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)
    with pytest.raises(TuneError, match=r"not cached and cannot be downloaded .*put resnet18-f37072fd.pth \(from "
                                        r"https://download.pytorch.org/models/resnet18-f37072fd.pth\) in .*/hub/"):
        build_model(config, (1, 16, 16), 4, (0.5,), (0.25,))

    torch.manual_seed(5)
    reference = torchvision.models.resnet18()  # 1000 classes, as the published weights
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), cache / url.rsplit("/", 1)[1])
    model = build_model(config, (1, 16, 16), 4, (0.5,), (0.25,))
    assert torch.equal(model[1].conv1.weight, reference.conv1.weight)
    assert model[1].fc.out_features == 4
    assert tuple(model[0].mean.flatten().tolist()) == pytest.approx(IMAGENET_MEAN)
    assert model(torch.zeros(2, 1, 16, 16, dtype=torch.uint8)).shape == (2, 4)  # grayscale repeated to RGB

    hubs.torchvision_state.cache_clear()
    (cache / url.rsplit("/", 1)[1]).unlink()
    bare = build_model(config, (1, 16, 16), 4, (0.0,), (0.0,), load_pretrained=False)  # never downloads
    assert bare.state_dict().keys() == model.state_dict().keys()
    assert all(bare.state_dict()[k].shape == v.shape for k, v in model.state_dict().items())


def _offline(url, *args, **kwargs):
    raise urllib.error.URLError("no network")


def test_timm_pretrained_weights_from_the_hugging_face_cache(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    config = RunConfig(model="timm:resnet18", pretrained=True)
    with pytest.raises(TuneError, match=r"pretrained weights of timm:resnet18 are not cached .*timm/resnet18.a1_in1k"):
        build_model(config, (3, 16, 16), 4, (0.5,) * 3, (0.25,) * 3)

    torch.manual_seed(6)
    reference = timm.create_model("resnet18")
    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file(reference.state_dict(), str(repo / "snapshots" / revision / "model.safetensors"))
    model = build_model(config, (1, 16, 16), 4, (0.5,), (0.25,))
    assert torch.equal(model[1].conv1.weight, reference.conv1.weight)
    assert model[1].fc.out_features == 4 and model[0].mean.shape == (1, 3, 1, 1)


def test_pretrained_applies_to_torchvision_and_timm_only():
    with pytest.raises(SpecError, match="pretrained: model bncnn has no pretrained weights"):
        RunConfig(model="bncnn", pretrained=True)
    with pytest.raises(SpecError, match="pretrained: cnn, mlp has no pretrained weights"):
        StudySpec.from_dict({"pretrained": True, "search": {"model": ["cnn", "mlp"]}})


# --- specs: model references and searched model arguments

def test_model_arguments_are_searched_params(tmp_path):
    spec = StudySpec.from_dict({"model": "torchvision:resnet18", "search": {
        "model.width": [16, 32], "model.depth": {"low": 1, "high": 4}, "model.drop_rate": {"low": 0, "high": 0.3},
        "model.act": "relu", "pretrained": [True, False]}})
    assert spec.search["model.width"] == Choices((16, 32)) and spec.search["model.act"] == Fixed("relu")
    assert spec.search["model.drop_rate"] == Range(0, 0.3)
    assert StudySpec.from_dict(spec.to_dict()) == spec

    import optuna

    from tuner.search.space import sample_config

    trial = optuna.create_study().ask()
    config = sample_config(trial, spec, seed=0)
    assert set(config.model_args) == {"width", "depth", "drop_rate", "act"}
    assert isinstance(config.model_args["depth"], int) and isinstance(config.model_args["drop_rate"], float)
    assert set(trial.params) >= {"model.width", "model.depth", "model.drop_rate", "pretrained"}
    assert "dropout" not in trial.params  # built-in families only
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_unknown_torchvision_model_is_refused_when_the_spec_loads(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("model: torchvision:resnet19\n")
    with pytest.raises(SpecError, match="torchvision has no classification model 'resnet19'"):
        load_spec(path)


def test_model_flag_replaces_the_searched_models():
    spec = StudySpec.from_dict({"search": {"model": ["cnn", "mlp"], "lr": 0.01}})
    replaced = spec.replace(model="torchvision:resnet18", model_dirs={})
    assert replaced.model == "torchvision:resnet18" and "model" not in replaced.search


# --- augmentation

def test_augmentation_is_per_image_seeded_and_shape_preserving():
    x = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).repeat(64, 1, 1, 1)
    flipped = flip(x, torch.Generator().manual_seed(0))
    mirrored = (flipped == x.flip(3)).flatten(1).all(1)
    assert 10 < mirrored.sum() < 54  # some images flipped, some not
    shifted = translate(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape and shifted.dtype == torch.uint8
    assert len({tuple(img.flatten().tolist()) for img in shifted}) > 10  # each image its own shift
    again = Augment(True, 2)(x, torch.Generator().manual_seed(3))
    assert torch.equal(again, Augment(True, 2)(x, torch.Generator().manual_seed(3)))
    assert not Augment() and Augment(flip=True)


def test_augmented_training_replays_exactly():
    config = RunConfig(model="bncnn", epochs=2, batch_size=10, flip=True, translate=3, label_smoothing=0.1, seed=4)
    splits = tiny_splits()
    first, second = fit(config, splits), fit(config, splits)
    assert [e.train_loss for e in first.history] == [e.train_loss for e in second.history]
    plain = fit(config.replace(flip=False, translate=0), splits)
    assert plain.history[0].train_loss != first.history[0].train_loss


def test_evaluation_never_augments(monkeypatch):
    calls = []
    monkeypatch.setattr(Augment, "__call__", lambda self, x, g: calls.append(len(x)) or x)
    fit(RunConfig(model="mlp", epochs=1, batch_size=40, flip=True), tiny_splits())
    assert calls == [40]  # the one training batch; validation and test go straight in


def test_models_without_convolutions_are_not_channels_last():
    from tuner.train import has_convolutions

    assert not has_convolutions(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    assert has_convolutions(build_model(RunConfig(model="bncnn"), (1, 16, 16), 4, (0.5,), (0.25,)))


def test_conv_models_train_channels_last_replay_exactly_and_are_tested_as_served(monkeypatch):
    """Channels-last trains conv models faster on the CPU too (docs/benchmarks.md); the same config still ends in
    the same weights, and the model is evaluated and handed back contiguous, as a model loaded from its weights
    serves it: the labels the test counted are the served ones, exactly."""
    import tuner.train
    from tuner.train import predictions

    layouts, train_epoch = [], tuner.train.train_epoch

    def spy(model, *args, **kwargs):
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        layouts.append(conv.weight.is_contiguous(memory_format=torch.channels_last))
        return train_epoch(model, *args, **kwargs)

    monkeypatch.setattr(tuner.train, "train_epoch", spy)
    config, splits = RunConfig(model="bncnn", epochs=2, batch_size=16, flip=True, seed=5), tiny_splits(n=64)
    first, second = fit(config, splits), fit(config, splits)
    assert layouts == [True] * 4
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                  second.model.state_dict().values(), strict=True))
    assert all(p.is_contiguous() for p in first.model.parameters())
    served = build_model(config, splits.shape, 4, splits.mean, splits.std, load_pretrained=False)
    served.load_state_dict(first.model.state_dict())
    assert torch.equal(predictions(served, splits.test), first.test_predicted)


def test_show_names_the_best_trial_of_each_model(cli, small_data_dir, storage_url, tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text("name: two\nepochs: 1\nvalidation: 0.2\nsampler: random\n"
                    "search: {model: [mlp, convnet], optimizer: adam, lr: 0.001, batch_size: 16, scheduler: none}\n")
    result = cli("start", "--spec", spec, "--trials", 6, "--seed", 0, "--data-dir", small_data_dir,
                 "--storage", storage_url, "--device", "cpu", "--keep-top", 0)
    assert result.exit_code == 0, result.output
    detail = json.loads(cli("show", "two", "--storage", storage_url, "--format", "json").stdout)
    assert set(detail["best_per_model"]) == {"mlp", "convnet"}
    assert detail["model"] == next(iter(detail["best_per_model"]))  # best model first
    table = cli("show", "two", "--storage", storage_url).stdout
    assert f"  model {detail['model']}" in table and "Best convnet: trial " in table and "Best mlp: trial " in table


def test_model_flag_of_tune_start(cli, small_data_dir, storage_url, user_module, monkeypatch):
    name, folder = user_module
    monkeypatch.chdir(folder)  # the current directory holds the module
    result = cli("start", "--model", f"{name}:make_net", "--spec", "fashion-mnist", "--study", "flag", "--epochs", 1,
                 "--trials", 1, "--data-dir", small_data_dir, "--storage", storage_url, "--device", "cpu",
                 "--keep-top", 0)
    assert result.exit_code == 0, result.output
    best = json.loads(cli("best", "flag", "--storage", storage_url, "--format", "json").stdout)
    config = best["user_attrs"]["config"]
    assert config["model"] == f"{name}:make_net" and config["model_dir"] == str(folder)
    assert "dropout" not in best["params"]
