"""The default study per kind of data: a folder of photos searches the photo family with photo augmentations, at
an image size chosen for the device and the budget; the benchmarks' default study stays as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import torchvision
from PIL import Image

from tuner.models.hubs import torchvision_weights_file
from tuner.record import SPEC_ATTR
from tuner.spec import Fixed, SpecError, StudySpec
from tuner.spec.defaults import PHOTO_FIRST_TRIAL, PHOTO_SEARCH, PRETRAINED_BACKBONE, photo_image_size
from tuner.spec.params import default_search
from tuner.spec.study import resolve_spec


def test_a_folder_gets_the_photo_study_and_a_benchmark_the_shared_one(tmp_path):
    photos = resolve_spec("photos", None, None, dataset=str(tmp_path))
    assert photos.model == "rescnn" and photos.search["flip"] == Fixed(True)
    assert {"crop", "jitter", "model.width"} <= set(photos.search)
    shared = default_search()
    # everything not photo-specific is the shared space's, as it is when that changes (the scheduler's gamma)
    assert {k: v for k, v in photos.search.items() if k not in PHOTO_SEARCH} == \
        {k: v for k, v in shared.items() if k not in PHOTO_SEARCH}
    fashion = resolve_spec("fashion-mnist", None, None, dataset="fashion-mnist")
    assert fashion.model == "bncnn" and fashion.search == shared
    assert not {"flip", "crop", "jitter", "trivial_augment", "mixup", "cutmix"} & set(fashion.search)  # flips hurt
    assert resolve_spec("photos", None, None, dataset=str(tmp_path), model="bncnn").model == "bncnn"


def test_the_image_size_follows_the_device_the_budget_and_the_images():
    cpu, line = photo_image_size("cpu", 2, 1500, 8, 374)
    assert cpu == 64 and "--image-size" in line and "64 px" in line
    assert photo_image_size("cuda", 1, 1500, 8, 374)[0] > cpu
    assert photo_image_size("cpu", 16, 1500, 8, 374)[0] > cpu
    assert photo_image_size("cpu", 2, 200, 8, 374)[0] > cpu  # fewer images: larger ones fit the same time
    assert photo_image_size("cpu", 2, 20_000, 8, 374)[0] < cpu
    assert photo_image_size("cpu", 2, 200, 8, 50)[0] == 48  # never upscaled past the images' median side
    assert photo_image_size("cpu", 2, 200, 8, 12)[0] == 12  # tiny images keep their size
    assert photo_image_size("cpu", 2, 10**7, 8)[0] == 32  # the smallest size, and the line says how long it takes
    assert "minutes a trial" in photo_image_size("cpu", 2, 10**7, 8)[1]


def write_photos(root: Path, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for label, colour in enumerate(((200, 40, 40), (40, 40, 200))):
        folder = root / "train" / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 30, (120, 90, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return root


def test_tune_start_on_a_folder_says_the_size_it_chose_and_searches_the_photo_family(cli, tmp_path, storage_url,
                                                                                     fresh_machine):
    photos = write_photos(tmp_path / "photos")
    result = cli("start", "--dataset", photos, "--trials", 1, "--epochs", 1, "--storage", storage_url)
    assert result.exit_code == 0, result.output
    # no pretrained weights cached and no network: one loud line, and the from-scratch family
    notes = [line for line in result.output.splitlines() if line.startswith("NOTE: training rescnn from scratch")]
    assert len(notes) == 1 and "mobilenet_v3_small" in notes[0] and "cannot be downloaded" in notes[0]
    sized = [line for line in result.output.splitlines() if line.startswith("image size")]
    # 20 training images: any size fits the time; the images' median shorter side (90 px) caps it
    assert len(sized) == 1 and sized[0].startswith("image size 80 px") and "--image-size N" in sized[0]
    study = optuna.load_study(study_name="photos", storage=storage_url)
    stored = StudySpec.from_dict(study.user_attrs[SPEC_ATTR])
    assert stored.model == "rescnn" and stored.image_size == 80
    # its first trial trains the conventional starting config, said once; the search goes on from there
    assert study.trials[0].params == PHOTO_FIRST_TRIAL
    assert "trial 0 trains a conventional starting config (width 24, optimizer adamw, lr 0.003, batch_size 64)" \
        in result.output
    resumed = cli("start", "--dataset", photos, "--trials", 1, "--epochs", 1, "--storage", storage_url)
    assert resumed.exit_code == 0 and "starting config" not in resumed.output
    second = optuna.load_study(study_name="photos", storage=storage_url).trials[1]
    assert second.params != PHOTO_FIRST_TRIAL and 0.25 <= second.params["crop"] <= 1


def test_a_spec_file_searches_from_its_first_trial_on(cli, tmp_path, storage_url):
    photos = write_photos(tmp_path / "photos", per_class=6)
    spec = tmp_path / "study.yaml"
    spec.write_text(f"dataset: {photos}\nmodel: rescnn\nimage_size: 24\nepochs: 1\n")
    result = cli("start", "--spec", spec, "--study", "mine", "--trials", 1, "--storage", storage_url)
    assert result.exit_code == 0, result.output
    assert "starting config" not in result.output
    study = optuna.load_study(study_name="mine", storage=storage_url)
    assert study.trials[0].params != PHOTO_FIRST_TRIAL


def test_production_trains_a_folder_studys_winner_six_times_a_trials_epochs(cli, tmp_path, storage_url):
    photos = write_photos(tmp_path / "photos", per_class=6)
    result = cli("start", "--dataset", photos, "--trials", 1, "--epochs", 1, "--storage", storage_url,
                 "--image-size", 24)
    assert result.exit_code == 0, result.output
    assert "tune train --full-train will train the winner 6 epochs, 6x a trial's" in result.output
    best = tmp_path / "best.yaml"
    assert cli("export", "photos", "-o", best, "--storage", storage_url).exit_code == 0
    production = cli("train", best, "--full-train", "--out", tmp_path / "run", "--device", "cpu")
    assert production.exit_code == 0, production.output
    assert "training 6 epochs, the study's production_epochs (its trials trained 1)" in production.output
    assert "after 6 epochs" in production.output
    replay = cli("train", best, "--out", tmp_path / "replay", "--device", "cpu")  # without --full-train: a replay
    assert replay.exit_code == 0 and "after 1 epoch " in replay.output
    shorter = cli("train", best, "--full-train", "--epochs", 2, "--out", tmp_path / "short", "--device", "cpu")
    assert shorter.exit_code == 0 and "after 2 epochs" in shorter.output and "production_epochs" not in \
        shorter.output


def test_a_folders_default_study_prunes_only_after_half_a_trials_epochs(cli, tmp_path, storage_url):
    photos = write_photos(tmp_path / "photos", per_class=6)
    result = cli("start", "--dataset", photos, "--trials", 1, "--epochs", 4, "--storage", storage_url,
                 "--image-size", 24)
    assert result.exit_code == 0, result.output
    assert "trials are compared for pruning from epoch 2 of 4 on" in result.output
    stored = StudySpec.from_dict(optuna.load_study(study_name="photos", storage=storage_url).user_attrs[SPEC_ATTR])
    assert stored.pruner == "median" and stored.pruner_options == {"n_warmup_steps": 2}
    # another pruner, a spec file or a benchmark: as asked, from the first epoch
    other = cli("start", "--dataset", photos, "--study", "other", "--trials", 1, "--epochs", 4, "--storage",
                storage_url, "--image-size", 24, "--pruner", "percentile")
    assert other.exit_code == 0 and "compared for pruning" not in other.output
    assert resolve_spec("fashion-mnist", None, None, dataset="fashion-mnist").pruner_options == {}


def test_a_spec_file_or_a_benchmark_keeps_production_at_the_trials_epochs(tmp_path):
    assert resolve_spec("fashion-mnist", None, None, dataset="fashion-mnist").production_epochs is None
    assert StudySpec.from_dict({"production_epochs": 20}).production_epochs == 20
    assert "production_epochs" not in StudySpec().to_dict()  # older stored specs read back equal
    with pytest.raises(SpecError, match="production_epochs must be an integer"):
        StudySpec.from_dict({"production_epochs": 2.5})


@pytest.mark.parametrize("flag", [["--image-size", "40"]])
def test_an_image_size_given_is_kept_and_not_announced(cli, tmp_path, storage_url, flag):
    photos = write_photos(tmp_path / "photos", per_class=6)
    result = cli("start", "--dataset", photos, "--trials", 1, "--epochs", 1, "--storage", storage_url, *flag)
    assert result.exit_code == 0, result.output
    assert not [line for line in result.output.splitlines() if line.startswith("image size")]


def test_with_weights_at_hand_the_folder_study_fine_tunes_a_pretrained_backbone(cli, tmp_path, storage_url,
                                                                                 fresh_machine):
    weights = torchvision_weights_file(PRETRAINED_BACKBONE)  # torch's hub cache, in this test's home
    weights.parent.mkdir(parents=True)
    torch.save(torchvision.models.get_model(PRETRAINED_BACKBONE, num_classes=1000).state_dict(), weights)
    photos = write_photos(tmp_path / "photos", per_class=6)
    result = cli("start", "--dataset", photos, "--trials", 1, "--epochs", 1, "--storage", storage_url)
    assert result.exit_code == 0, result.output
    assert f"starting from the ImageNet weights of torchvision:{PRETRAINED_BACKBONE}" in result.output
    study = optuna.load_study(study_name="photos", storage=storage_url)
    stored = StudySpec.from_dict(study.user_attrs[SPEC_ATTR])
    assert stored.model == f"torchvision:{PRETRAINED_BACKBONE}" and stored.pretrained
    assert 0.01 <= study.trials[0].params["backbone_lr"] <= 1 and "model.width" not in study.trials[0].params
    scratch = cli("start", "--dataset", photos, "--study", "scratch", "--model", "rescnn", "--trials", 1, "--epochs",
                  1, "--storage", storage_url)
    assert scratch.exit_code == 0 and "ImageNet" not in scratch.output  # --model: the user's choice, as given
