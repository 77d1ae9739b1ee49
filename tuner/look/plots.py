"""`tune plot`: Optuna's plotly figures of one study, in one HTML file that opens offline, and PNGs where kaleido is.

The HTML embeds plotly.js once (no CDN), so it opens on a machine without internet; PNG export needs the optional
`kaleido` package (and the browser it drives), which tune does not depend on. A multi-objective study's figures
plot its metric (the first objective), and one more shows its Pareto front.
"""

from __future__ import annotations

import html
import importlib.util
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import optuna
from optuna.trial import FrozenTrial

from tuner.errors import TuneError, one_line
from tuner.fileio import file_safe, write_text
from tuner.storage import first_value, is_multi_objective

# File stem -> (title, name of the optuna.visualization function).
PLOTS = {
    "history": ("Optimization history", "plot_optimization_history"),
    "intermediate": ("Intermediate values (per epoch)", "plot_intermediate_values"),
    "importances": ("Parameter importances", "plot_param_importances"),
    "parallel": ("Parallel coordinates", "plot_parallel_coordinate"),
    "slice": ("Slice plot", "plot_slice"),
    "pareto": ("Pareto front", "plot_pareto_front"),  # multi-objective studies only
}
HTML_FILE = "index.html"
MAX_WIDTH = 1400  # px: the page and each figure fit a laptop's screen
SLICE_PARAMS = 4  # params per slice figure: plotly gives each 300 px


@dataclass
class PlotFiles:
    html: Path
    png: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each: what was left out, and why


def default_plot_dir(study_name: str) -> Path:
    return Path(f"{file_safe(study_name)}-plots")


def _visualization() -> ModuleType:
    visualization: ModuleType | None
    try:
        import optuna.visualization as visualization
    except ImportError:
        visualization = None
    if visualization is None or not visualization.is_available():
        raise TuneError("tune plot needs plotly: pip install plotly")
    return visualization


def figures(study: optuna.Study) -> tuple[dict[str, Any], dict[str, str]]:
    """(the study's figures by file stem, why a figure was left out): importances need enough varied trials."""
    from tuner.look.inspect import importance_options, importances

    visualization = _visualization()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise TuneError(f"study {study.study_name!r} has no completed trial to plot yet: run "
                        f"`tune start --study {study.study_name}` first")
    found, note = importances(study)
    skip = {} if found else {"importances": cast(str, note)}  # importances says why it found none
    several = is_multi_objective(study)
    # a multi-objective study's figures plot its metric, the first objective (Optuna asks for a target there)
    target = {"target": first_value, "target_name": (study.metric_names or ["value"])[0]} if several else {}
    figs: dict[str, Any] = {}
    for stem, (_, name) in PLOTS.items():
        if stem == "pareto":
            if several:
                figs[stem] = visualization.plot_pareto_front(study)
            continue
        if stem == "importances" and found:  # the same figures as `tune show` and the dashboard
            with warnings.catch_warnings():  # PED-ANOVA's note that it ranks low targets: maximized ones are flipped
                warnings.simplefilter("ignore")
                figs[stem] = visualization.plot_param_importances(
                    study, params=list(found), target_name=(study.metric_names or ["value"])[0],
                    **importance_options(study))
        elif stem == "slice":
            figs.update(_slices(visualization, study, complete, target))
        elif stem not in skip:
            figs[stem] = getattr(visualization, name)(study, **({} if stem == "intermediate" else target))
    for fig in figs.values():
        if fig.layout.width is not None and fig.layout.width > MAX_WIDTH:
            fig.update_layout(width=MAX_WIDTH)
    return figs, skip


def _slices(visualization: ModuleType, study: optuna.Study, complete: list[FrozenTrial],
            target: dict[str, Any]) -> dict[str, Any]:
    """Slice plots of SLICE_PARAMS params each (one of every param would be 300 px a param wide): slice, slice-2."""
    params = sorted({name for trial in complete for name in trial.params})
    chunks = [params[i:i + SLICE_PARAMS] for i in range(0, len(params), SLICE_PARAMS)] or [[]]
    return {"slice" if n == 0 else f"slice-{n + 1}": visualization.plot_slice(study, params=chunk or None, **target)
            for n, chunk in enumerate(chunks)}


def title_of(stem: str) -> str:
    """A figure's title: slice-2 is the second part of the slice plot."""
    base, _, part = stem.partition("-")
    return PLOTS[base][0] + (f", part {part}" if part else "")


def page(study_name: str, figs: dict[str, Any]) -> str:
    """One HTML page with every figure, plotly.js inlined once before the first."""
    parts = []
    for i, (stem, fig) in enumerate(figs.items()):
        fig.update_layout(title=title_of(stem))
        parts.append(fig.to_html(full_html=False, include_plotlyjs=i == 0))
    title = html.escape(f"tune: study {study_name}")
    body = "\n".join(f'<section id="{stem}">{part}</section>' for stem, part in zip(figs, parts, strict=True))
    style = f"<style>body {{max-width: {MAX_WIDTH}px; margin: 0 auto; font-family: sans-serif}}</style>"
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>{style}</head>\n'
            f"<body><h1>{title}</h1>\n{body}\n</body></html>\n")


def write_pngs(figs: dict[str, Any], out_dir: Path) -> tuple[list[Path], list[str]]:
    if importlib.util.find_spec("kaleido") is None:
        return [], ["PNG skipped: kaleido is not installed (pip install kaleido); wrote HTML only"]
    written: list[Path] = []
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
    files.notes = [f"{title_of(stem)} left out: {why}" for stem, why in skipped.items()] + files.notes
    return files
