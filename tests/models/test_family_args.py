"""The built-in families take a searched width and depth (`model.width`, `model.depth`); their defaults are the
families as they always were, so that weights and exports from before load and replay unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tuner.errors import SpecError, TuneError
from tuner.models import build_model
from tuner.spec import RunConfig, StudySpec
from tuner.spec.refs import MODELS

# Parameters of each family on 28x28 grayscale images with 10 classes, as tune 0.1 built them (rescnn: as 0.2 did).
PARAMETERS_BEFORE = {"mlp": 669_706, "cnn": 1_199_882, "convnet": 111_640, "bncnn": 206_970, "rescnn": 308_074}


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def convolutions(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("family", MODELS)
def test_defaults_build_the_families_as_before(family):
    assert parameters(build_model(RunConfig(model=family), (1, 28, 28), 10, (0.5,), (0.25,))) == \
        PARAMETERS_BEFORE[family]


def test_width_and_depth_shape_each_family():
    def build(family: str, **args: int) -> nn.Module:
        return build_model(RunConfig(model=family, model_args=args), (1, 28, 28), 10, (0.5,), (0.25,))

    assert convolutions(build("bncnn", width=32, depth=3)) == [32, 64, 128]
    assert convolutions(build("cnn", width=8, depth=3)) == [8, 16, 32]
    assert convolutions(build("convnet", width=6, depth=1)) == [6]
    assert [m.out_features for m in build("mlp", width=64, depth=3).modules() if isinstance(m, nn.Linear)] == \
        [64, 64, 64, 10]
    wide = build("bncnn", width=8, depth=4)
    assert wide(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 10)


def test_bad_family_arguments_are_one_line():
    with pytest.raises(SpecError, match=r"model bncnn takes model.width and model.depth, not model.act"):
        RunConfig(model="bncnn", model_args={"act": "relu"})
    with pytest.raises(SpecError, match=r"model.width of mlp must be a whole number >= 1, got 0.5"):
        RunConfig(model="mlp", model_args={"width": 0.5})
    with pytest.raises(TuneError, match=r"model bncnn with depth 6 cannot take 1x28x28 images .*: use larger "
                                        r"images \(image_size, for folders\), a smaller model.depth or another"):
        build_model(RunConfig(model="bncnn", model_args={"depth": 6}), (1, 28, 28), 10, (0.5,), (0.25,))
    spec = StudySpec.from_dict({"search": {"model": ["mlp", "timm:resnet18"], "model.drop_rate": [0.1]}})
    assert spec.search["model.drop_rate"]  # other models' arguments stay allowed beside a built-in family


def test_a_study_searches_width_and_depth_and_its_winner_trains_back(cli, data_dir, storage_url, tmp_path):
    spec = tmp_path / "wide.yaml"
    spec.write_text("name: wide\nmodel: bncnn\nepochs: 1\nvalidation: 0.2\nsampler: random\n"
                    "search: {optimizer: adam, lr: 0.003, batch_size: 64, scheduler: cosine,\n"
                    "         model.width: {low: 4, high: 12, step: 4}, model.depth: [1, 2]}\n")
    started = cli("start", "--spec", spec, "--trials", 3, "--seed", 0, "--data-dir", data_dir, "--storage",
                  storage_url, "--device", "cpu", "--keep-top", 0)
    assert started.exit_code == 0, started.output
    best = json.loads(cli("best", "wide", "--storage", storage_url, "--format", "json").stdout)
    args = best["user_attrs"]["config"]["model_args"]
    assert args == {"width": best["params"]["model.width"], "depth": best["params"]["model.depth"]}
    assert args["width"] in (4, 8, 12) and args["depth"] in (1, 2)
    assert cli("export", "wide", "--storage", storage_url, "-o", tmp_path / "best.yaml").exit_code == 0
    trained = cli("train", tmp_path / "best.yaml", "--data-dir", data_dir, "--device", "cpu", "--out", tmp_path / "r")
    assert trained.exit_code == 0, trained.output
    assert f"(trial: {best['user_attrs']['test_accuracy']:.4f})" in trained.stdout  # replayed exactly


def test_a_depth_the_images_cannot_take_is_one_line_before_any_study(cli, data_dir, tmp_path):
    spec = tmp_path / "deep.yaml"
    spec.write_text("name: deep\nmodel: bncnn\nepochs: 1\nsearch: {model.depth: {low: 1, high: 7, step: 3}}\n")
    storage = tmp_path / "s.db"
    result = cli("start", "--spec", spec, "--trials", 1, "--data-dir", data_dir, "--storage", f"sqlite:///{storage}",
                 "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert "Error: model bncnn with depth 7 cannot take 1x28x28 images" in result.output
    assert "Traceback" not in result.output and not storage.exists()
