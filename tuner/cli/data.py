"""`tune data DIR`: what `tune start --dataset DIR` would see, before any training."""

from __future__ import annotations

import shlex
from typing import Any

import click

from tuner.cli.common import image_size_option
from tuner.cli.output import emit, format_option, stdout_console


def _size_text(size: list[int]) -> str:
    return f"{size[0]}x{size[1]}"


def print_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    console = stdout_console()
    folders = ", ".join(f"{name}/" for name in report["split_folders"].values())
    layout = f"split folders {folders}" if report["layout"] == "splits" else "one folder per class"
    console.print(f"Dataset {report['root']} ({layout})")
    rule = "chosen as tune start chooses it" if report["default_image_size"] else "--image-size"
    channels = "grayscale (1 channel)" if report["channels"] == 1 else "RGB (3 channels)"
    console.print(f"{len(report['classes'])} classes; {channels} images at {report['image_size']}x"
                  f"{report['image_size']} ({rule}; {report['image_size_rule']})")
    table = Table(title="Images per class and split", title_justify="left")
    splits = list(report["splits"])
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    for name in report["classes"]:
        table.add_row(name, *(str(report["splits"][s]["per_class"][name]) for s in splits))
    table.add_row("all", *(str(report["splits"][s]["images"]) for s in splits), style="bold")
    console.print(table)
    if report.get("image_size_choice"):
        console.print(report["image_size_choice"][0].upper() + report["image_size_choice"][1:])
    if report.get("imbalance"):
        skew = report["imbalance"]
        console.print(f"Imbalanced classes: {skew['largest']} has {skew['largest_images']} training images, "
                      f"{skew['smallest']} {skew['smallest_images']} ({skew['ratio']:g}x). Plain accuracy rewards "
                      "predicting the large classes: select on `metric: balanced_accuracy` (or macro_f1) in a spec, "
                      "with `class_weights: true` under its `search:`", highlight=False)
    for split, how in report["carved_out"].items():
        console.print(f"No {split}/ folder: {split} is {how}")
    sizes = report["source_sizes"]
    modes = ", ".join(f"{mode} {count}" for mode, count in sorted(report["source_modes"].items()))
    console.print(f"Source images: {_size_text(sizes['min'])} to {_size_text(sizes['max'])} (median "
                  f"{_size_text(sizes['median'])}); modes: {modes}")
    ignored = ", ".join(f"{why} {count}" for why, count in report["ignored"].items() if count)
    console.print(f"Ignored files: {ignored or 'none'}")
    unreadable = report["unreadable"]
    if unreadable["count"]:
        console.print(f"Skipped {unreadable['count']} unreadable image(s), first: {unreadable['first']}")
    cache = report["cache"]
    state = "up to date" if cache["fresh"] else f"built now, decoding took {cache['decode_seconds']:.1f} s"
    console.print(f"Cache: {cache['path']} ({state})")
    console.print(f"On {report['placement']['device']}, {report['placement']['line']}")
    # the size always: tune start chooses from its own epochs and device, and another size is another cache
    console.print(f"Ready: tune start --dataset {shlex.quote(report['root'])} --image-size {report['image_size']}")


@click.command("data")
@click.argument("directory", metavar="DIR")
@image_size_option
@format_option
def data(directory: str, image_size: int | None, fmt: str) -> None:
    """Show what `tune start --dataset DIR` would see in the image folder DIR: its layout, classes, images per
    split and class, image sizes and modes, skipped files, and the decoded-image cache (built if missing).

    \b
    Layouts: DIR/<class>/<image>, or DIR/train/<class>/... with an optional
             DIR/val/ (or valid/, validation/) and DIR/test/.

    \b
    Examples:
      tune data ~/photos
      tune data ~/photos --image-size 96 --format json
    """
    from tuner.datasets.report import folder_report
    from tuner.search.photos import with_photo_size
    from tuner.spec.study import default_spec
    from tuner.train import resolve_device

    lines: list[str] = []  # the size `tune start --dataset DIR` would choose, so that both use one cache
    chosen = with_photo_size(default_spec(directory), resolve_device("auto"), lines).image_size
    report = folder_report(directory, image_size or chosen)
    report["default_image_size"] = image_size is None
    report["image_size_choice"] = lines[0] if lines and image_size is None else None
    emit(fmt, report, lambda: print_report(report), rows=False)
