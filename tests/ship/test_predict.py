"""`tune predict` and `tuner.predict`: a trained run labels new files exactly as it was tested, and bad input is one
line. One small folder dataset (train/ and test/ of generated PNGs) goes through `tune start`, `export`, `train`."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from safetensors import safe_open

import tuner
from tuner.cli import main
from tuner.datasets.images import preprocess_record, with_steps
from tuner.errors import TuneError
from tuner.ship.checkpoint import read_info
from tuner.testing import make_images

CLASSES = ("circle", "cross", "square")
FOLDER_SPEC = """\
name: shapes
model: mlp
epochs: 2
validation: 0.2
sampler: random
search:
  optimizer: adam
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
  batch_size: 16
"""


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="tune")


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def assert_one_line_error(result, start: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {start}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def write_image_folder(root: Path, per_class: dict[str, int], *, seed: int = 0) -> Path:
    """root/<split>/<class>/<n>.png: RGB 20x24 (W x H) images, each class a tinted pattern with noise, so that the
    default image size (20) crops them and predict has to repeat that exactly."""
    for offset, (split, count) in enumerate(per_class.items()):
        gray, labels = make_images(count * len(CLASSES), num_classes=len(CLASSES), size=24, noise=0.7,
                                   seed=seed + offset)
        for n, (image, label) in enumerate(zip(gray, labels.tolist(), strict=True)):
            tint = torch.tensor([(1.0, 0.6, 0.3), (0.3, 1.0, 0.6), (0.6, 0.3, 1.0)][n % 3]).view(3, 1, 1)
            rgb = (image[None, :, 2:22].float() * tint).round().to(torch.uint8).permute(1, 2, 0).numpy()
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb, "RGB").save(folder / f"{n:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> dict:
    """A folder dataset searched (2 trials, weights kept), the best trial exported and trained to runs/best."""
    work = tmp_path_factory.mktemp("shapes")
    data = write_image_folder(work / "shapes", {"train": 24, "test": 8})
    (work / "spec.yaml").write_text(FOLDER_SPEC)
    storage = f"sqlite:///{work / 'studies.db'}"
    ok(invoke("start", "--spec", work / "spec.yaml", "--dataset", data, "--storage", storage, "--trials", 2,
              "--seed", 0, "--device", "cpu"))
    ok(invoke("export", "shapes", "--storage", storage, "-o", work / "best.yaml", "--with-weights"))
    ok(invoke("train", work / "best.yaml", "--out", work / "run", "--device", "cpu"))
    study = optuna.load_study(study_name="shapes", storage=storage)
    return {"data": data, "run": work / "run", "export": work / "best.yaml", "weights": work / "best.safetensors",
            "study": study, "storage": storage, "metrics": json.loads((work / "run" / "metrics.json").read_text())}


# --- the served model behaves as the tested one

def test_predicted_accuracy_is_the_runs_test_accuracy(folder_run):
    metrics = folder_run["metrics"]
    best = folder_run["study"].best_trial
    assert metrics["test_accuracy"] == pytest.approx(best.user_attrs["test_accuracy"], abs=1e-6)  # replayed

    result = ok(invoke("predict", folder_run["run"], folder_run["data"] / "test", "--format", "csv",
                       "--device", "cpu"))
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3 * 8 and list(rows[0]) == ["path", "class", "probability"]
    right = sum(Path(row["path"]).parent.name == row["class"] for row in rows)
    assert right / len(rows) == metrics["test_accuracy"]  # same images, same preprocessing: exactly
    assert result.stderr == (f"Accuracy {right / len(rows):.4f}: {right} of 24 images in class-named folders "
                             "labelled as their folder's class (24 images in all)\n")

    predictions = tuner.predict(tuner.load_model(folder_run["run"]), [folder_run["data"] / "test"])
    assert predictions.accuracy() == metrics["test_accuracy"]
    assert predictions.confusion() == metrics["confusion"]


def test_kept_trial_weights_predict_as_the_trial_tested(folder_run):
    best = folder_run["study"].best_trial
    predictions = tuner.predict(folder_run["weights"], folder_run["data"] / "test")  # a path works as the model
    assert predictions.accuracy() == pytest.approx(best.user_attrs["test_accuracy"], abs=1e-9)


def test_weights_export_and_card_carry_the_input(folder_run):
    trial_input = folder_run["study"].best_trial.user_attrs["input"]
    preprocess = with_steps(preprocess_record(3, (20, 20)))  # with the steps a client without tune follows
    for weights in (folder_run["run"] / "model.safetensors", folder_run["weights"]):
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata()
        assert json.loads(metadata["classes"]) == list(CLASSES) and json.loads(metadata["preprocess"]) == preprocess
        assert json.loads(metadata["input_shape"]) == [3, 20, 20] and metadata["num_classes"] == "3"
        info = read_info(weights)
        assert info.classes == CLASSES and info.shape == (3, 20, 20) and info.preprocess == preprocess
    exported = yaml.safe_load(folder_run["export"].read_text())["input"]
    assert exported == {"shape": [3, 20, 20], "num_classes": 3, "classes": list(CLASSES), "preprocess": preprocess,
                        "fingerprint": trial_input["fingerprint"]}
    card = (folder_run["run"] / "README.md").read_text()
    for heading in ("## What it is", "## How it was chosen", "## How it scores", "## How it was trained",
                    "## Use it"):
        assert heading in card
    metrics = folder_run["metrics"]
    assert f"Test accuracy **{metrics['test_accuracy']:.2%}** on 24 test images" in card
    assert "out of 2 trials" in card and f'tuner.load_model("{folder_run["run"]}")' in card
    assert set(metrics["per_class_accuracy"]) == set(CLASSES)


def test_train_warns_when_the_folder_changed_since_the_trial(folder_run, tmp_path):
    document = yaml.safe_load(folder_run["export"].read_text())
    document["input"]["fingerprint"] = "0123456789abcdef"
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(document))
    result = ok(invoke("train", tmp_path / "old.yaml", "--out", tmp_path / "run", "--device", "cpu", "--epochs", 1))
    assert (f"warning: {folder_run['data']} changed since trial {document['provenance']['trial']} was trained "
            "(fingerprint ") in result.stderr


# --- output

def test_top_k_json_and_confusion(folder_run):
    result = ok(invoke("predict", folder_run["run"], folder_run["data"] / "test" / "cross", "--top-k", 2,
                       "--format", "json", "--confusion", "--batch-size", 5, "--device", "cpu"))
    rows = json.loads(result.stdout)
    assert len(rows) == 8 and list(rows[0]) == ["path", "class", "probability", "class_2", "probability_2"]
    assert all(r["probability"] >= r["probability_2"] and r["class"] != r["class_2"] for r in rows)
    assert "Confusion matrix (rows: folder class, columns: predicted class):" in result.stderr
    image = sorted((folder_run["data"] / "test" / "cross").glob("*.png"))[0]
    table = ok(invoke("predict", folder_run["run"], image)).stdout
    assert image.name in table and "probability" in table


def test_unreadable_files_are_listed_and_skipped(folder_run, tmp_path):
    shutil.copytree(folder_run["data"] / "test" / "circle", tmp_path / "circle")
    (tmp_path / "circle" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "circle" / "notes.txt").write_text("not an image, and not named like one: left out")
    result = ok(invoke("predict", folder_run["run"], tmp_path, "--format", "csv", "--device", "cpu"))
    assert len(result.stdout.splitlines()) == 1 + 8
    assert f"skipped unreadable image {tmp_path / 'circle' / 'broken.png'}: " in result.stderr
    assert "1 unreadable file(s) skipped" in result.stderr


# --- bad input is one line

def test_bad_sources_and_inputs_are_one_line(folder_run, tmp_path):
    image = sorted((folder_run["data"] / "test" / "cross").glob("*.png"))[0]
    assert_one_line_error(invoke("predict", tmp_path / "nope", image),
                          f"no such run folder or weights file: {tmp_path / 'nope'} (give a run folder")
    assert_one_line_error(invoke("predict", tmp_path, image), f"{tmp_path} has no model.safetensors: give a run")
    (tmp_path / "x.safetensors").write_text("garbage")
    assert_one_line_error(invoke("predict", tmp_path / "x.safetensors", image),
                          f"{tmp_path / 'x.safetensors'} is not a safetensors weights file")
    assert_one_line_error(invoke("predict", folder_run["run"], tmp_path / "missing.png"),
                          f"no such file or folder: {tmp_path / 'missing.png'}")
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(invoke("predict", folder_run["run"], tmp_path / "notes.txt"),
                          f"not a readable image: {tmp_path / 'notes.txt'}: cannot identify image file")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("predict", folder_run["run"], tmp_path / "empty"),
                          f"no image files in {tmp_path / 'empty'}")


def test_tensors_are_checked_then_labelled_like_files(folder_run):
    from tuner.datasets.images import decode_for

    model = tuner.load_model(folder_run["run"])
    files = sorted((folder_run["data"] / "test" / "square").glob("*.png"))
    images = torch.stack([decode_for(f, model.info.preprocess) for f in files])
    from_tensor = [p.class_name for p in tuner.predict(model, images)]
    assert from_tensor == [p.class_name for p in tuner.predict(model, files)]
    assert tuner.predict(model, images[0], top_k=3)[0].top[0][0] == from_tensor[0]  # one (C, H, W) image
    assert [p.class_name for p in tuner.predict(model, list(images))] == from_tensor

    with pytest.raises(TuneError, match=r"^images have 1 channel\(s\), the model takes 3 \(RGB\): convert them"):
        tuner.predict(model, images[:, :1])
    with pytest.raises(TuneError, match=r"^images are 24x24, the model takes 20x20: resize them"):
        tuner.predict(model, torch.zeros(2, 3, 24, 24, dtype=torch.uint8))
    with pytest.raises(TuneError, match=r"^images must be uint8 \(0-255\), got torch.float32"):
        tuner.predict(model, images.float() / 255)
    with pytest.raises(TuneError, match=r"^images must be a tensor \(N, 3, 20, 20\)"):
        tuner.predict(model, images[None])


def test_weights_saved_before_classes_were_recorded_still_load(tmp_path):
    from safetensors.torch import save_model

    from tuner.models import build_model
    from tuner.spec import RunConfig

    config = RunConfig(model="mlp")
    network = build_model(config, (1, 28, 28), 10, (0.5,), (0.25,))
    save_model(network, str(tmp_path / "old.safetensors"),
               metadata={"config": json.dumps(config.to_dict()), "input_shape": "[1, 28, 28]", "num_classes": "10"})
    model = tuner.load_model(tmp_path / "old.safetensors")
    assert model.classes == tuple(str(i) for i in range(10))
    assert model.info.preprocess == with_steps(preprocess_record(1, (28, 28)))
    assert tuner.predict(model, torch.zeros(1, 1, 28, 28, dtype=torch.uint8))[0].class_name in model.classes


# --- flip test-time augmentation

def test_flip_tta_averages_each_image_with_its_mirror(folder_run):
    from tuner.datasets.images import decode_for

    model = tuner.load_model(folder_run["run"])
    files = sorted((folder_run["data"] / "test" / "square").glob("*.png"))
    images = torch.stack([decode_for(f, model.info.preprocess) for f in files])
    with torch.no_grad():
        expected = (torch.softmax(model(images), 1) + torch.softmax(model(images.flip(-1)), 1)) / 2
    labelled = tuner.predict(model, files, tta="flip")
    assert [p.class_name for p in labelled] == [CLASSES[i] for i in expected.argmax(1).tolist()]
    assert [p.probability for p in labelled] == pytest.approx(expected.max(1).values.tolist(), abs=1e-6)
    assert [p.probability for p in tuner.predict(model, images, tta="flip")] == [p.probability for p in labelled]
    with pytest.raises(TuneError, match=r"^unknown tta 'rotate': use none or flip$"):
        tuner.predict(model, files, tta="rotate")


def test_flip_tta_on_a_model_trained_without_flips_says_so_once(folder_run):
    assert folder_run["metrics"]["test_accuracy_tta_flip"] is None  # not measured: the config has flip: false
    assert "With flip test-time augmentation" not in (folder_run["run"] / "README.md").read_text()
    result = ok(invoke("predict", folder_run["run"], folder_run["data"] / "test", "--tta", "flip", "--format", "csv",
                       "--device", "cpu"))
    assert len(result.stdout.splitlines()) == 1 + 24
    notes = [line for line in result.stderr.splitlines() if line.startswith("NOTE")]
    assert notes == ["NOTE: --tta flip on a model trained without flips (flip: false): mirrored images are new to "
                     "it, so averaging may not help"]
    assert "NOTE" not in ok(invoke("predict", folder_run["run"], folder_run["data"] / "test")).stderr
    assert_one_line_error(invoke("predict", folder_run["run"], folder_run["data"] / "test", "--tta", "rotate"),
                          "Invalid value for '--tta': 'rotate' is not one of 'none', 'flip'.")


def test_a_run_trained_with_flips_measures_flip_tta_on_its_test_split(folder_run, tmp_path):
    document = yaml.safe_load(folder_run["export"].read_text())
    document["config"]["flip"] = True
    (tmp_path / "flips.yaml").write_text(yaml.safe_dump(document))
    result = ok(invoke("train", tmp_path / "flips.yaml", "--out", tmp_path / "run", "--device", "cpu", "--epochs", 1))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    served = tuner.predict(tmp_path / "run", folder_run["data"] / "test", tta="flip")
    assert metrics["test_accuracy_tta_flip"] == served.accuracy() and served.notes == []
    assert f", {served.accuracy():.4f} with --tta flip after 1 epoch" in result.stdout
    gain = (metrics["test_accuracy_tta_flip"] - metrics["test_accuracy"]) * 100
    assert (f"With flip test-time augmentation (`tune predict --tta flip`: each image's probabilities averaged with "
            f"its left-right mirror's, twice the compute): **{metrics['test_accuracy_tta_flip']:.2%}** ({gain:+.2f} "
            "points).") in (tmp_path / "run" / "README.md").read_text()


# --- per-class accuracy

def test_each_trial_records_its_validation_accuracy_per_class_and_show_lists_the_best(folder_run):
    best = folder_run["study"].best_trial
    per_class = best.user_attrs["val_per_class"]
    assert list(per_class) == list(CLASSES)
    images = sum(scores["images"] for scores in per_class.values())
    right = sum(scores["images"] * scores["accuracy"] for scores in per_class.values())
    assert right / images == pytest.approx(best.intermediate_values[max(best.intermediate_values)], abs=1e-9)

    storage = folder_run["storage"]
    shown = json.loads(ok(invoke("show", "shapes", "--storage", storage, "--format", "json")).stdout)["per_class"]
    assert [row["class"] for row in shown] == sorted(CLASSES, key=lambda name: per_class[name]["accuracy"])
    assert {row["class"]: row["accuracy"] for row in shown} == {k: v["accuracy"] for k, v in per_class.items()}
    table = ok(invoke("show", "shapes", "--storage", storage)).stdout
    assert f"Validation accuracy per class, trial {best.number}, worst first:\n" in table
