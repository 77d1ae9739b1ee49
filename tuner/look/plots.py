"""`tune plot`: Optuna's plotly figures of one study, in one HTML file that opens offline, and PNGs where kaleido is.

The HTML embeds plotly.js once (no CDN), so it opens on a machine without internet; PNG export needs the optional
`kaleido` package (and the browser it drives), which tune does not depend on.
"""

from __future__ import annotations

import html
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from tuner.errors import TuneError, one_line
from tuner.fileio import file_safe, write_text

# File stem -> (title, name of the optuna.visualization function).
PLOTS = {
    "history": ("Optimization history", "plot_optimization_history"),
    "intermediate": ("Intermediate values (per epoch)", "plot_intermediate_values"),
    "importances": ("Parameter importances", "plot_param_importances"),
    "parallel": ("Parallel coordinates", "plot_parallel_coordinate"),
    "slice": ("Slice plot", "plot_slice"),
}
HTML_FILE = "index.html"


@dataclass
class PlotFiles:
    html: Path
    png: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each: what was left out, and why


def default_plot_dir(study_name: str) -> Path:
    return Path(f"{file_safe(study_name)}-plots")


def _visualization():
    try:
        import optuna.visualization as visualization
    except ImportError:
        visualization = None
    if visualization is None or not visualization.is_available():
        raise TuneError("tune plot needs plotly: pip install plotly")
    return visualization


def figures(study: optuna.Study) -> tuple[dict, dict[str, str]]:
    """(the study's figures by file stem, why a figure was left out): importances need enough varied trials."""
    from tuner.look.inspect import importances

    visualization = _visualization()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise TuneError(f"study {study.study_name!r} has no completed trial to plot yet: run "
                        f"`tune start --study {study.study_name}` first")
    found, note = importances(study)
    skip = {} if found else {"importances": note}
    return {stem: getattr(visualization, name)(study) for stem, (_, name) in PLOTS.items() if stem not in skip}, skip


def page(study_name: str, figs: dict) -> str:
    """One HTML page with every figure, plotly.js inlined once before the first."""
    parts = []
    for i, (stem, fig) in enumerate(figs.items()):
        fig.update_layout(title=PLOTS[stem][0])
        parts.append(fig.to_html(full_html=False, include_plotlyjs=i == 0))
    title = html.escape(f"tune: study {study_name}")
    body = "\n".join(f'<section id="{stem}">{part}</section>' for stem, part in zip(figs, parts, strict=True))
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
            f"<body><h1>{title}</h1>\n{body}\n</body></html>\n")


def write_pngs(figs: dict, out_dir: Path) -> tuple[list[Path], list[str]]:
    if importlib.util.find_spec("kaleido") is None:
        return [], ["PNG skipped: kaleido is not installed (pip install kaleido); wrote HTML only"]
    written = []
    for stem, fig in figs.items():
        path = out_dir / f"{stem}.png"
        try:
            fig.write_image(str(path))
        except Exception as e:  # kaleido present but cannot render (no browser for kaleido 1.x, say)
            reason = one_line(e)
            return written, [f"PNG skipped: kaleido could not render ({reason}); wrote HTML only"]
        written.append(path)
    return written, []


def write_plots(study: optuna.Study, out_dir: Path) -> PlotFiles:
    figs, skipped = figures(study)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = PlotFiles(out_dir / HTML_FILE)
    write_text(files.html, page(study.study_name, figs))
    files.png, files.notes = write_pngs(figs, out_dir)
    files.notes = [f"{PLOTS[stem][0]} left out: {why}" for stem, why in skipped.items()] + files.notes
    return files
