"""Image folders as datasets: layouts, every kind of image file, the decode cache, `tune data`, bad folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from tuner.datasets import cache as image_cache
from tuner.datasets import load_source, load_splits
from tuner.datasets.images import decode

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(autouse=True)
def _fresh_load_cache():
    load_splits.cache_clear()  # each test sees the folder as it left it, not a process-wide cached copy
    yield
    load_splits.cache_clear()


def noisy(color: tuple[int, int, int], size: tuple[int, int], seed: int) -> Image.Image:
    """A learnable image: the class color plus noise."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def write_class_folders(root: Path, per_class: int = 6, size: tuple[int, int] = (24, 20),
                        classes: dict[str, tuple[int, int, int]] = COLORS) -> Path:
    for label, (name, color) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noisy(color, size, seed=label * 1000 + i).save(root / name / f"{i}.png")
    return root


def awkward_folder(root: Path) -> Path:
    """Two classes of every kind of file a camera, a phone or a scraper leaves behind."""
    red, blue = root / "red", root / "blue"
    red.mkdir(parents=True)
    blue.mkdir(parents=True)
    noisy(COLORS["red"], (1200, 900), 1).save(red / "huge.jpg", quality=90)
    noisy(COLORS["red"], (5, 7), 2).save(red / "tiny.png")
    noisy(COLORS["red"], (40, 30), 3).convert("P", palette=Image.Palette.ADAPTIVE).save(red / "palette.png")
    rgba = noisy(COLORS["red"], (30, 30), 4).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(red / "rgba.png")
    noisy(COLORS["red"], (30, 40), 5).convert("CMYK").save(red / "cmyk.jpg")
    Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(blue / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    noisy(COLORS["blue"], (48, 32), 6).save(blue / "rotated.jpg", exif=exif.tobytes())
    noisy(COLORS["blue"], (32, 32), 7).save(blue / "plain.webp")
    noisy(COLORS["blue"], (32, 32), 8).save(blue / "plain.bmp")
    (blue / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (blue / "notes.txt").write_text("not an image")
    (blue / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "README.md").write_text("a file beside the class folders")
    (root / ".hidden").mkdir()
    noisy(COLORS["blue"], (32, 32), 9).save(root / ".hidden" / "x.png")
    return root


# --- what an image is ------------------------------------------------------------------------------------------

def test_every_kind_of_image_file_is_decoded_and_the_corrupt_one_skipped(tmp_path):
    root = awkward_folder(tmp_path / "photos")
    source = load_source(str(root))
    assert source.classes == ("blue", "red")
    assert source.preprocess["channels"] == 3 and source.train.x.dtype == torch.uint8
    assert len(source.train) == 9  # 10 image files, one corrupt
    assert source.info["unreadable"][0].startswith(str(root / "blue" / "corrupt.jpg"))
    assert source.info["ignored"] == {"not an image": 1, "hidden": 1, "outside a class folder": 1}
    size = source.preprocess["size"][0]
    assert source.train.x.shape[1:] == (3, size, size)
    assert size == 32  # the median shorter side of the nine readable images (5, 30, 30, 30, 32, ... 900)


def test_gray_images_among_color_ones_are_decoded_as_predict_decodes_them(tmp_path):
    root = awkward_folder(tmp_path / "photos")
    source = load_source(str(root), image_size=16)
    gray = decode(root / "blue" / "sixteen.png", 3, 16)
    assert source.train.x.shape[1:] == (3, 16, 16)
    assert any(torch.equal(image, gray) for image in source.train.x)


def test_transparency_becomes_white_and_sixteen_bit_is_scaled(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    assert decode(tmp_path / "clear.png", 3, 8).unique().tolist() == [255]
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "white16.png")
    Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)).save(tmp_path / "mid16.png")
    assert decode(tmp_path / "white16.png", 1, 8).unique().tolist() == [255]
    assert decode(tmp_path / "mid16.png", 1, 8).unique().tolist() == [128]


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40), dtype=np.uint8)
    pixels[:, 20:] = 255  # stored: left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: top half black, bottom half white
    Image.fromarray(pixels).save(tmp_path / "rotated.png", exif=exif.tobytes())
    image = decode(tmp_path / "rotated.png", 1, (40, 20))[0]
    assert image.shape == (40, 20)
    assert image[:18].float().mean() < 10 and image[22:].float().mean() > 245


def test_shorter_side_is_resized_then_the_center_cropped(tmp_path):
    pixels = np.zeros((10, 30, 3), dtype=np.uint8)
    pixels[:, 10:20] = 255  # a white vertical band in the middle third
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = decode(tmp_path / "wide.png", 3, 10)
    assert image.shape == (3, 10, 10) and image.min() == 255  # the crop is exactly the middle third


def test_grayscale_folders_give_one_channel(tmp_path):
    for name, level in (("dark", 30), ("light", 220)):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("L", (12, 12), level + i).save(tmp_path / name / f"{i}.png")
    Image.new("P", (12, 12), 0).save(tmp_path / "dark" / "palette-gray.gif")  # the default palette is gray
    source = load_source(str(tmp_path))
    assert source.preprocess["channels"] == 1 and source.train.x.shape[1:] == (1, 12, 12)


# --- layouts and splits ----------------------------------------------------------------------------------------

def test_class_folders_carve_test_and_validation_out_of_train_per_class(tmp_path):
    root = write_class_folders(tmp_path / "colors", per_class=10)
    splits = load_splits(str(root), "", 0.2, 0, "cpu")
    assert splits.classes == ("blue", "green", "red")
    for part, expected in ((splits.test, 2), (splits.val, 2), (splits.train, 6)):
        assert torch.bincount(part.y, minlength=3).tolist() == [expected] * 3
    again = load_splits(str(root), "", 0.2, 0, "cpu", with_validation=True, image_size=None)
    assert torch.equal(again.val.x, splits.val.x)


def test_split_folders_are_used_as_they_are(tmp_path):
    root = tmp_path / "data"
    write_class_folders(root / "train", per_class=5)
    write_class_folders(root / "Validation", per_class=2)
    write_class_folders(root / "test", per_class=3)
    splits = load_splits(str(root), "", 0.15, 0, "cpu")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 6, 9)
    full = load_splits(str(root), "", 0.15, 0, "cpu", with_validation=False)
    assert len(full.train) == 21 and full.val is full.test


def test_the_cache_is_rebuilt_when_a_file_or_the_image_size_changes(tmp_path):
    root = write_class_folders(tmp_path / "colors", per_class=4)
    first = load_source(str(root))
    assert first.info["cache_fresh"] is False and Path(first.info["cache"]).is_file()
    assert load_source(str(root)).info["cache_fresh"] is True
    noisy(COLORS["red"], (24, 20), 99).save(root / "red" / "new.png")
    changed = load_source(str(root))
    assert changed.info["cache_fresh"] is False and len(changed.train) == len(first.train) + 1
    assert changed.info["fingerprint"] != first.info["fingerprint"]
    os.utime(root / "red" / "new.png", ns=(1, 1))
    assert load_source(str(root)).info["cache_fresh"] is False
    resized = load_source(str(root), image_size=8)
    assert resized.info["cache_fresh"] is False and resized.train.x.shape[2:] == (8, 8)


def test_a_torn_cache_file_is_rebuilt(tmp_path):
    root = write_class_folders(tmp_path / "colors", per_class=2)
    cache = Path(load_source(str(root)).info["cache"])
    cache.write_bytes(cache.read_bytes()[:100])
    assert len(load_source(str(root)).train) == 6


def test_the_folder_study_sees_the_same_images_as_the_torchvision_one(mini_data_dir, tmp_path):
    import torchvision

    root = tmp_path / "fashion"
    for split, train in (("train", True), ("test", False)):
        dataset = torchvision.datasets.FashionMNIST(str(mini_data_dir), train=train, download=False)
        for i, (image, label) in enumerate(dataset):
            folder_name = root / split / dataset.classes[label].replace("/", "-")
            folder_name.mkdir(parents=True, exist_ok=True)
            image.save(folder_name / f"{i:05d}.png")
    reference = load_source("fashion-mnist", mini_data_dir)
    mine = load_source(str(root))
    assert mine.preprocess == reference.preprocess  # 1 channel, 28x28: decoded, not resized
    names = [name.replace("/", "-") for name in reference.classes]
    for part in ("train", "test"):
        theirs, ours = getattr(reference, part), getattr(mine, part)
        expected = sorted((names[int(y)], x.numpy().tobytes()) for x, y in zip(theirs.x, theirs.y, strict=True))
        found = sorted((mine.classes[int(y)], x.numpy().tobytes()) for x, y in zip(ours.x, ours.y, strict=True))
        assert found == expected


# --- the commands ----------------------------------------------------------------------------------------------

def test_tune_data_shows_what_a_search_would_see(cli, tmp_path):
    root = awkward_folder(tmp_path / "photos")
    result = cli("data", root)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "one folder per class" in out and "2 classes" in out and "RGB (3 channels)" in out
    assert "Skipped 1 unreadable image(s), first: " + str(root / "blue" / "corrupt.jpg") in out
    assert "built now" in out and "Ready: tune start --dataset" in out
    again = json.loads(cli("data", root, "--format", "json").stdout)
    assert again["cache"]["fresh"] is True
    assert again["splits"]["train"]["per_class"] == {"blue": 4, "red": 5}
    assert again["source_sizes"]["max"] == [1200, 900] and again["ignored"]["not an image"] == 1


def test_a_folder_study_records_its_classes_and_metric_name(cli, tmp_path, storage_url):
    root = write_class_folders(tmp_path / "colors", per_class=8, size=(16, 16))
    result = cli("start", "--dataset", root, "--study", "colors", "--trials", 2, "--epochs", 1, "--seed", 0,
                 "--storage", storage_url, "--keep-top", 0)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="colors", storage=storage_url)
    assert study.metric_names == ["val_accuracy"]
    assert study.user_attrs["input"]["classes"] == ["blue", "green", "red"]
    assert study.user_attrs["spec"]["dataset"] == str(root)
    trial = study.trials[0]
    assert trial.user_attrs["input"]["shape"] == [3, 16, 16]
    assert trial.user_attrs["config"]["dataset"] == str(root)
    shown = cli("show", "colors", "--storage", storage_url)
    assert f"Data: {root}, 3x16x16 images, 3 classes: blue, green, red" in shown.output


def test_a_spec_names_its_folder_relative_to_itself(cli, tmp_path, storage_url, monkeypatch):
    write_class_folders(tmp_path / "project" / "images", per_class=4, size=(12, 12))
    spec = tmp_path / "project" / "study.yaml"
    spec.write_text("name: rel\ndataset: images\nimage_size: 8\nmodel: mlp\nepochs: 1\nsearch:\n  lr: 0.01\n")
    monkeypatch.chdir(tmp_path)
    result = cli("start", "--spec", spec, "--trials", 1, "--storage", storage_url, "--keep-top", 0)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="rel", storage=storage_url)
    assert study.trials[0].user_attrs["input"]["shape"] == [3, 8, 8]


def _bad_folders(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    file = tmp_path / "file.png"
    noisy(COLORS["red"], (8, 8), 0).save(file)
    empty = tmp_path / "empty"
    empty.mkdir()
    single = write_class_folders(tmp_path / "single", per_class=2, classes={"only": (1, 2, 3)})
    differ = tmp_path / "differ"
    write_class_folders(differ / "train", per_class=2)
    write_class_folders(differ / "test", per_class=2, classes={"red": (1, 1, 1), "cyan": (0, 9, 9)})
    unreadable = tmp_path / "unreadable"
    for name in ("a", "b"):
        (unreadable / name).mkdir(parents=True)
        (unreadable / name / "x.jpg").write_bytes(b"not a jpeg")
    no_images = tmp_path / "no-images"
    for name in ("a", "b"):
        (no_images / name).mkdir(parents=True)
        (no_images / name / "x.txt").write_text("text")
    return {
        "missing": (tmp_path / "nowhere", "no such folder"),
        "file": (file, "is a file, not a folder"),
        "empty": (empty, "is empty: put one subfolder per class"),
        "single": (single, "has only one class (only)"),
        "differ": (differ, "has other classes than"),
        "unreadable": (unreadable, "no readable image in"),
        "no-images": (no_images, "no image files in"),
    }


@pytest.mark.parametrize("case", ["missing", "file", "empty", "single", "differ", "unreadable", "no-images"])
def test_bad_folders_get_one_line_and_no_study(cli, tmp_path, storage_url, case):
    path, message = _bad_folders(tmp_path)[case]
    result = cli("start", "--dataset", path, "--trials", 1, "--storage", storage_url)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert optuna.get_all_study_names(storage_url) == []
    assert cli("data", path).exit_code == 2


@pytest.mark.parametrize("size", ["0", "-3", "big"])
def test_bad_image_sizes_get_one_line(cli, tmp_path, storage_url, size):
    root = write_class_folders(tmp_path / "colors", per_class=2)
    result = cli("start", "--dataset", root, "--image-size", size, "--storage", storage_url)
    assert result.exit_code == 2 and "--image-size" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_bad_image_size_in_a_spec_gets_one_line(cli, tmp_path, storage_url):
    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset: fashion-mnist\nimage_size: 0\n")
    result = cli("start", "--spec", spec, "--storage", storage_url)
    assert result.exit_code == 2 and "image_size must be >= 1, got 0" in result.output


def test_the_cache_lives_where_tune_cache_dir_says(tmp_path, monkeypatch):
    monkeypatch.setenv(image_cache.CACHE_ENV, str(tmp_path / "cache"))
    root = write_class_folders(tmp_path / "colors", per_class=2)
    assert Path(load_source(str(root)).info["cache"]).parent == tmp_path / "cache"


def test_resuming_after_the_folder_changed_warns(cli, tmp_path, storage_url):
    root = write_class_folders(tmp_path / "colors", per_class=4, size=(12, 12))
    args = ("start", "--dataset", root, "--study", "colors", "--trials", 1, "--epochs", 1, "--storage", storage_url,
            "--keep-top", 0)
    assert "changed since" not in cli(*args).output
    assert "changed since" not in cli(*args).output
    noisy(COLORS["red"], (12, 12), 77).save(root / "red" / "late.png")
    load_splits.cache_clear()  # a new `tune start` is a new process
    result = cli(*args)
    assert result.exit_code == 0 and f"warning: {root} changed since study 'colors'" in result.output


def test_workers_read_the_cache_the_parent_built(cli, tmp_path, storage_url):
    root = write_class_folders(tmp_path / "colors", per_class=6, size=(12, 12))
    assert cli("data", root).exit_code == 0
    cache = next(image_cache.cache_dir().glob("*.images"))
    built = cache.stat().st_mtime_ns
    result = cli("start", "--dataset", root, "--study", "pool", "--trials", 2, "--epochs", 1, "--workers", 2,
                 "--storage", storage_url, "--keep-top", 0)
    assert result.exit_code == 0, result.output
    assert cache.stat().st_mtime_ns == built and len(list(image_cache.cache_dir().glob("*.images"))) == 1
    assert not list(image_cache.cache_dir().glob("*.partial"))
    study = optuna.load_study(study_name="pool", storage=storage_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


def test_a_folder_study_is_named_after_its_folder(cli, tmp_path, storage_url):
    root = write_class_folders(tmp_path / "holiday-photos", per_class=3, size=(8, 8))
    result = cli("start", "--dataset", root, "--trials", 1, "--epochs", 1, "--storage", storage_url, "--keep-top", 0)
    assert result.exit_code == 0, result.output
    assert optuna.get_all_study_names(storage_url) == ["holiday-photos"]


def test_too_few_images_per_class_is_one_line_and_no_study(cli, tmp_path, storage_url):
    root = write_class_folders(tmp_path / "pairs", per_class=2, size=(8, 8))
    result = cli("start", "--dataset", root, "--trials", 1, "--storage", storage_url)
    assert result.exit_code == 2 and "too few images to hold out validation images" in result.output
    assert optuna.get_all_study_names(storage_url) == []
    assert cli("data", root).exit_code == 2


def test_a_model_that_cannot_take_the_images_is_one_line_and_no_study(cli, tmp_path, storage_url):
    root = write_class_folders(tmp_path / "colors", per_class=4, size=(12, 12))
    result = cli("start", "--dataset", root, "--model", "convnet", "--trials", 1, "--storage", storage_url)
    assert result.exit_code == 2 and "model convnet cannot take 3x12x12 images" in result.output
    assert optuna.get_all_study_names(storage_url) == []


def test_an_empty_class_folder_is_refused_whether_or_not_the_folder_was_cached(cli, tmp_path):
    root = write_class_folders(tmp_path / "colors", per_class=4)
    assert cli("data", root).exit_code == 0
    (root / "zebra").mkdir()
    (root / "zebra" / "notes.txt").write_text("no images yet")
    result = cli("data", root)
    assert result.exit_code == 2 and "class folder(s) zebra" in result.output


def test_resuming_on_other_classes_is_refused(cli, tmp_path, storage_url):
    root = write_class_folders(tmp_path / "colors", per_class=4, size=(12, 12))
    args = ("start", "--dataset", root, "--trials", 1, "--epochs", 1, "--storage", storage_url, "--keep-top", 0)
    assert cli(*args).exit_code == 0
    write_class_folders(root, per_class=4, size=(12, 12), classes={"yellow": (230, 220, 20)})
    load_splits.cache_clear()
    result = cli(*args)
    assert result.exit_code == 2 and "study 'colors' was created on classes ['blue', 'green', 'red']" in result.output
    assert len(optuna.load_study(study_name="colors", storage=storage_url).trials) == 1


def test_tune_data_on_a_shipped_dataset_name_says_what_to_do(cli):
    result = cli("data", "mnist")
    assert result.exit_code == 2 and "tune start --dataset mnist" in result.output


def test_tune_data_says_when_classes_are_imbalanced_and_which_metric_to_select_on(cli, tmp_path):
    root = write_class_folders(tmp_path / "skewed", per_class=6, size=(12, 12))
    for i in range(6, 30):
        noisy(COLORS["red"], (12, 12), seed=5000 + i).save(root / "red" / f"{i}.png")
    result = cli("data", root)
    assert result.exit_code == 0, result.output
    (line,) = [text for text in result.output.splitlines() if text.startswith("Imbalanced classes: red has ")]
    assert "select on `metric: balanced_accuracy`" in line
    assert "Imbalanced" not in cli("data", write_class_folders(tmp_path / "even", size=(12, 12))).output
