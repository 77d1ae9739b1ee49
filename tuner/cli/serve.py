"""Using a trained model: `tune predict` (labels for new images) and `tune convert` (ONNX or TorchScript for serving
stacks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from tuner.cli.output import FORMATS, emit
from tuner.errors import counted

if TYPE_CHECKING:
    from tuner.ship.inference import Predictions

# --- predict

source_argument = click.argument("source", metavar="SOURCE")


@click.command()
@source_argument
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Also give the 2nd to K-th most probable classes (class_2, probability_2, ...).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table for people; json or csv for scripts (on stdout, messages on stderr).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True,
              help="Where to run the model: auto picks CUDA, then MPS, then the CPU.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, metavar="N",
              help="Images per forward pass.")
@click.option("--confusion", is_flag=True,
              help="Print the confusion matrix (on stderr) when the input folders are named after classes.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Test-time augmentation: flip averages each image's probabilities with its left-right mirror's "
                   "(twice the compute; for models trained with flips). An ONNX client does the same by averaging "
                   "the softmax of the image and of image[..., ::-1].")
def predict(source: str, inputs: tuple[str, ...], top_k: int, fmt: str, device: str, batch_size: int,
            confusion: bool, tta: str) -> None:
    """Label images with a trained model: a row per image with path, class and probability.

    SOURCE is a run folder from `tune train` or a .safetensors file (tune export --with-weights); each INPUT is
    an image file or a folder, walked recursively. Every image is prepared exactly as the training images were
    (decoded, converted to the model's channels, resized to its size). Where the folders are named after the
    classes (DIR/cat/1.jpg), a summary gives the accuracy. Unreadable files are listed on stderr and skipped.

    \b
    Examples:
      tune predict runs/best photos/ --top-k 3
      tune predict runs/best data/test --confusion --format csv > predictions.csv
      tune predict best.safetensors cat.jpg dog.png --format json
      tune predict runs/best photos/ --tta flip   (the model card says if it pays)
    """
    from tuner.errors import TuneError
    from tuner.ship.inference import predict as label

    result = label(source, list(inputs), top_k=top_k, device=device, batch_size=batch_size, tta=tta)
    if not result.items and len(result.skipped) == 1:
        raise TuneError(f"not a readable image: {result.skipped[0]}")
    if not result.items and result.skipped:
        raise TuneError(f"no readable image among {len(result.skipped)} files (first: {result.skipped[0]}): check "
                        "that they are images")
    if not result.items:
        raise TuneError(f"no image files in {', '.join(inputs)}: give image files or folders of them")
    for line in result.notes:
        click.echo(line, err=True)
    for line in result.skipped:
        click.echo(f"skipped unreadable image {line}", err=True)
    rows = [p.row(top_k) for p in result]
    emit(fmt, rows, lambda: _predictions_table(rows), rows=True)
    _summary(result, confusion)


def _predictions_table(rows: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from tuner.cli.output import stdout_console

    table = Table()
    for key in rows[0]:
        table.add_column(key, justify="right" if key.startswith("probability") else "left")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else escape(str(v)) for v in row.values()))  # paths, names
    stdout_console().print(table)


def _summary(result: Predictions, confusion: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    labelled = result.labelled()
    skipped = f"; {len(result.skipped)} unreadable file(s) skipped" if result.skipped else ""
    if not labelled:
        click.echo(f"Labelled {counted(len(result), 'image')}{skipped}", err=True)
        if confusion:
            click.echo("no confusion matrix: no input folder is named after a class (" +
                       ", ".join(result.classes[:10]) + (", ..." if len(result.classes) > 10 else "") + ")", err=True)
        return
    right = sum(p.class_name == p.folder_class for p in labelled)
    click.echo(f"Accuracy {result.accuracy():.4f}: {right} of {counted(len(labelled), 'image')} in class-named "
               f"folders labelled as their folder's class ({counted(len(result), 'image')} in all{skipped})", err=True)
    if confusion:
        click.echo("Confusion matrix (rows: folder class, columns: predicted class):", err=True)
        table = Table()
        table.add_column("")
        for name in result.classes:
            table.add_column(name, justify="right")
        for name, row in zip(result.classes, result.confusion(), strict=True):
            table.add_row(name, *map(str, row))
        console = Console(stderr=True, highlight=False)
        (console if console.is_terminal else Console(stderr=True, highlight=False, width=200)).print(table)


# --- convert

@click.command()
@source_argument
@click.option("--to", "to", type=click.Choice(["onnx", "torchscript"]), required=True,
              help="onnx (ONNX Runtime, TensorRT, ...) or torchscript (torch.jit.load, LibTorch).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where to write it [default: beside the weights: model.onnx or model.pt].")
@click.option("--data-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where a torchvision dataset's files are, to check on its test images (never downloaded) "
                   "[env TUNE_DATA_DIR; default: ~/.cache/tune/data].")
@click.option("--images", multiple=True, metavar="PATH",
              help="Image files or folders to check the file on (repeatable) [default: the training data].")
def convert(source: str, to: str, output: str | None, data_dir: str | None, images: tuple[str, ...]) -> None:
    """Convert a trained model to ONNX or TorchScript for serving without tune.

    The file takes uint8 images (N, C, H, W) at the trained size, any N, and outputs logits: normalization is
    inside. Its metadata names the classes, the input shape and the preprocessing of image files. The file is
    checked before it is written: loaded back (ONNX Runtime; torch.jit.load), it must give torch's logits within
    1e-4 on real images.

    \b
    Examples:
      tune convert runs/best --to onnx
      tune convert runs/best --to torchscript -o serve/model.pt --images data/test
    """
    from tuner.ship.convert import convert as run_convert

    converted = run_convert(source, to, output, data_dir=data_dir, images=list(images) or None)
    engine = "ONNX Runtime" if to == "onnx" else "torch.jit.load"
    click.echo(f"Wrote {converted.path}")
    click.echo(f"Checked with {engine} on {converted.checked} {converted.inputs}: largest logit difference "
               f"{converted.max_difference:.1e}", err=True)
    if converted.measured is not None:
        size = "" if converted.measured.size_bytes else f"; file {converted.path.stat().st_size / 1e6:.3g} MB"
        click.echo(f"Latency {converted.measured.text()}{size}", err=True)


COMMANDS = (predict, convert)
