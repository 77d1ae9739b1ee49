"""The model card: README.md beside the weights of a `tune train` run, for the colleague who gets the folder.

What the model is, how it was chosen, how it scores, how it was trained, and how to use it, from what the run
knows (config, export provenance, metrics with the latency measured by tune train, input); nothing is measured
here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tuner.spec import RunConfig
from tuner.spec.constraints import Constraints

MAX_CONFUSION_CLASSES = 20  # a bigger confusion matrix stays in metrics.json


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]


def _what(config: RunConfig, metrics: dict[str, Any], input_info: dict[str, Any]) -> list[str]:
    shape = input_info["shape"]
    preprocess = input_info.get("preprocess") or {}
    kind = {1: "grayscale", 3: "RGB"}.get(shape[0], f"{shape[0]}-channel")
    size = "x".join(map(str, preprocess.get("size", shape[1:])))
    classes = input_info.get("classes") or []
    parameters = metrics.get("parameters")
    count = f" ({parameters:,} parameters)" if parameters else ""
    return [
        "## What it is", "",
        f"- **Architecture**: `{config.model}`{count}, trained on `{config.dataset}`.",
        f"- **Input**: uint8 {kind} images, shape (N, {', '.join(map(str, shape))}). Image files are decoded with "
        f"Pillow, converted to {kind}, resized ({preprocess.get('resize', 'shorter-side-center-crop')}: shorter "
        f"side to the size, then the center crop) to {size}; the model normalizes them itself.",
        f"- **Output**: {len(classes)} logits, one per class, in this order: "
        + ", ".join(f"`{name}`" for name in classes) + ".",
        "- **Files**: `model.safetensors` (weights; the config, input shape, classes and preprocessing in its "
        "metadata), `config.yaml` (the run config, trainable again), `metrics.json` (the scores below).",
        "",
    ]


def _chosen(provenance: dict[str, Any]) -> list[str]:
    lines = ["## How it was chosen", ""]
    if "study" not in provenance:
        return lines + ["From a run config written by hand, not exported from a study.", ""]
    search = provenance.get("search") or {}
    budget = ""
    if search:
        budget = (f" out of {search['trials']} trials ({search['complete']} complete, {search['pruned']} pruned, "
                  f"{search['failed']} failed; {search['epochs']} epochs trained in all)")
    value = provenance.get("value")
    value_text = f"{value:.6g}" if isinstance(value, float) else str(value)
    test = provenance.get("test_accuracy")
    lines.append(f"Trial {provenance.get('trial')} of study `{provenance['study']}`{budget}, with value "
                 f"{value_text} on the validation split the search selected on"
                 + (f" and test accuracy {_percent(test)}" if isinstance(test, float) else "") + ".")
    if provenance.get("storage"):
        lines.append(f"The study is stored in `{provenance['storage']}`.")
    return lines + [""]


def _scores(metrics: dict[str, Any]) -> list[str]:
    classes, confusion = metrics.get("classes") or [], metrics.get("confusion") or []
    images = sum(map(sum, confusion))
    test, trial = metrics.get("test_accuracy"), metrics.get("trial_test_accuracy")
    versus = f" (the trial measured {_percent(trial)})" if isinstance(trial, float) else ""
    lines = ["## How it scores", "", f"Test accuracy **{_percent(test)}** on {images} test images{versus}.", ""]
    lines += _tta(test, metrics.get("test_accuracy_tta_flip"))
    per_class = metrics.get("per_class_accuracy") or {}
    rows = [[name, sum(row), _percent(per_class.get(name))] for name, row in zip(classes, confusion, strict=True)]
    lines += _table(["class", "test images", "accuracy"], rows) + [""]
    if len(classes) > MAX_CONFUSION_CLASSES:
        return lines + [f"The confusion matrix ({len(classes)} classes) is in `metrics.json`.", ""]
    lines += ["Confusion matrix (rows: true class, columns: predicted class):", ""]
    lines += _table(["true \\ predicted", *classes], [[name, *row] for name, row in zip(classes, confusion,
                                                                                          strict=True)])
    return lines + [""]


def _tta(test: float | None, flipped: float | None) -> list[str]:
    """Whether flip test-time augmentation pays on the test split (measured only for models trained with flips)."""
    if flipped is None or test is None:
        return []
    gain = f"{(flipped - test) * 100:+.2f} points"
    return [f"With flip test-time augmentation (`tune predict --tta flip`: each image's probabilities averaged with "
            f"its left-right mirror's, twice the compute): **{_percent(flipped)}** ({gain}).", ""]


def _members(metrics: dict[str, Any]) -> list[str]:
    """An ensemble's members: where each came from and how it scores alone."""
    members = metrics.get("members") or []
    if not members:
        return []
    lines = ["## Members", "", f"An ensemble of {len(members)} networks: it averages their class probabilities. "
             "Each member alone:", ""]
    rows = [[i, m.get("trial", "-"), m["config"].get("model"), m["config"].get("optimizer"),
             f"{m['config'].get('lr', 0):.3g}", m["config"].get("scheduler"), m["config"].get("epochs"),
             _percent(m.get("test_accuracy"))] for i, m in enumerate(members, start=1)]
    return lines + _table(["member", "trial", "model", "optimizer", "lr", "scheduler", "epochs", "test accuracy"],
                          rows) + ["", "Their full run configs are in `config.yaml` (section `ensemble`) and "
                                   "`metrics.json`.", ""]


def _deployment(metrics: dict[str, Any]) -> list[str]:
    """Latency and size as measured on the trained model (tuner.ship.deploy.production_proof), and whether it meets
    the constraints of the study it came from."""
    section = metrics.get("deployment") or {}
    measured = section.get("measured")
    if not isinstance(measured, dict):
        return []
    ms, env = measured["latency_ms"], measured.get("environment") or {}
    size = f"; ONNX file {measured['size_bytes'] / 1e6:.3g} MB" if measured.get("size_bytes") else ""
    lines = ["## Latency and size", "",
             f"One batch of {measured['batch']} on {measured['runtime']} with {measured['threads']} CPU thread(s), "
             f"{measured['runs']} timed calls after a warm-up: p50 {ms['p50']:.3g} ms, p95 {ms['p95']:.3g} ms, p99 "
             f"{ms['p99']:.3g} ms; {measured['params']:,} parameters{size}. Measured on {env.get('cpu')} "
             f"(load per core {env.get('load')}; environment fingerprint `{measured.get('fingerprint')}`): "
             "latency holds for that machine and thread count.", ""]
    if section.get("constraints"):
        verdict = "meets them" if section.get("meets") else "**BREAKS them**"
        limits = Constraints.from_dict(section["constraints"])
        lines += [f"The study it came from was constrained to {limits}: this model {verdict}.", ""]
    return lines


def _trained(config: RunConfig, metrics: dict[str, Any]) -> list[str]:
    data = "train + validation" if metrics.get("full_train") else "the trial's training split"
    when = metrics.get("trained", "")
    versions = metrics.get("versions") or {}
    return [
        "## How it was trained", "",
        f"`tune train {metrics.get('source')}`: {metrics.get('epochs')} epochs on {data}, on "
        f"{metrics.get('device')} in {metrics.get('wall_seconds', 0):.1f} s ({when}; tune {versions.get('tune')}, "
        f"torch {versions.get('torch')}). The run config:", "",
        "```yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip("\n"), "```", "",
    ]


def _use(out_dir: Path) -> list[str]:
    return [
        "## Use it", "",
        "```python",
        "import tuner",
        f'model = tuner.load_model("{out_dir}")',
        'print([(p.path, p.class_name, p.probability) for p in tuner.predict(model, ["images/"])])',
        "```", "",
        "```bash",
        f"tune predict {out_dir} images/ --top-k 3   # a row per image: path, class, probability",
        f"tune convert {out_dir} --to onnx           # for serving without Python: uint8 images in, logits out",
        "```", "",
    ]


def model_card(out_dir: Path, config: RunConfig, provenance: dict[str, Any], metrics: dict[str, Any],
               input_info: dict[str, Any]) -> str:
    """The README.md of a run folder."""
    title = f"# {Path(out_dir).name}: `{config.model}` image classifier, {len(input_info.get('classes') or [])} classes"
    intro = ["", "Trained by `tune` (hyperparameters searched with Optuna); every figure below is from "
             "`metrics.json` and `config.yaml` in this folder.", ""]
    return "\n".join([title, *intro, *_what(config, metrics, input_info), *_chosen(provenance),
                      *_scores(metrics), *_members(metrics), *_deployment(metrics), *_trained(config, metrics),
                      *_use(Path(out_dir))])
