"""`tune train FILE --ensemble K`: the K best distinct configs an export lists (its `config` and the runners-up in
its `ensemble` section), each trained on the same data through `fit`, saved as one model that averages their class
probabilities (tuner.models.ensemble): one safetensors file, its members' weights under `members.I.` and their run
configs in the metadata, that `tune predict`, `tuner.load_model` and `tune convert` take like any other model.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import TuneError
from tuner.ship.export import Export
from tuner.ship.production import (
    TrainedRun,
    check_out_dir,
    cpu_threads,
    data_notes,
    default_out_dir,
    diverged,
    write_run,
)
from tuner.spec import RunConfig

if TYPE_CHECKING:
    from tuner.train import Epoch

SHARED = ("dataset", "image_size", "validation", "split_seed")  # what every member must share: the same data


def members_of(export: Export, count: int, path: str | Path) -> list[tuple[RunConfig, dict[str, Any]]]:
    """The first `count` members the export lists (run config, where it came from), checked to share their data."""
    members = export.members()
    if len(members) < count:
        raise TuneError(f"{path} lists {len(members)} distinct config(s), not {count}: export the study again "
                        f"(`tune export STUDY --top {count} -o {path}`) once it has {count} complete trials with "
                        f"distinct configs, or train --ensemble {len(members)}")
    members = members[:count]
    first = members[0][0]
    for number, (config, _) in enumerate(members[1:], start=2):
        differ = [name for name in SHARED if getattr(config, name) != getattr(first, name)]
        if differ:
            raise TuneError(f"{path}: ensemble member {number} trains on other data than the first ({', '.join(differ)}"
                            " differ): the members of an ensemble share their dataset and split")
    return members


def _entry(config: RunConfig, first: RunConfig, origin: dict[str, Any]) -> dict[str, Any]:
    """An `ensemble` entry of config.yaml: where the member came from, the fields that differ from the first's."""
    base = first.to_dict()
    return {**origin, "config": {k: v for k, v in config.to_dict().items() if base.get(k) != v}}


def train_ensemble(export: Export, path: str | Path, count: int, *, out_dir: Path | None = None,
                   data_dir: str | Path | None = None, epochs: int | None = None, device: str = "auto",
                   full_train: bool = False, overwrite: bool = False,
                   on_member: Callable[[int, RunConfig], None] | None = None,
                   on_epoch: Callable[[Epoch], None] | None = None,
                   on_note: Callable[[str], None] | None = None) -> TrainedRun:
    """Train the first `count` members of `export` (read from `path`) in turn and write one run folder, as
    `tune train` does for one config; `on_member(number, config)` hears each member start. `epochs` stretches
    every member's schedule (RunConfig.stretched)."""
    from tuner.datasets import splits_for
    from tuner.models.ensemble import Ensemble
    from tuner.train import Diverged, FitResult, fit, predictions, resolve_device

    # --- setup: read and check everything before spending training time
    members = members_of(export, count, path)
    notes: list[str] = []
    configs = []
    for number, (config, origin) in enumerate(members, start=1):
        stretched, note = config.stretched(epochs) if epochs is not None else (config, None)
        configs.append(stretched)
        if note:
            notes.append(f"member {number} (trial {origin.get('trial', '?')}): {note}")
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(path)
    check_out_dir(out_dir, overwrite)
    torch_device = resolve_device(device)
    splits = splits_for(configs[0], data_dir or export.data_dir, str(torch_device), with_validation=not full_train)
    for line in notes + data_notes(export, splits):
        if on_note is not None:
            on_note(line)

    # --- train each member, then test them together
    results: list[FitResult] = []
    with cpu_threads(export.provenance.get("threads") if torch_device.type == "cpu" else None) as threads:
        for number, config in enumerate(configs, start=1):
            if on_member is not None:
                on_member(number, config)
            try:
                results.append(fit(config, splits, on_epoch))
            except Diverged as e:
                raise diverged(path, e, number) from None
    model = Ensemble([result.model for result in results]).eval()
    predicted = predictions(model, splits.test)
    combined = FitResult(model, [], int((predicted == splits.test.y.cpu()).sum()) / len(splits.test), predicted,
                         sum(result.seconds for result in results))

    # --- one run folder: the ensemble's weights, the first member's config with the others', metrics
    origins = [origin for _, origin in members]
    listed = [{"trial": origin.get("trial"), "value": origin.get("value"),
               "trial_test_accuracy": origin.get("test_accuracy"), "test_accuracy": result.test_accuracy,
               "config": config.to_dict()} for origin, config, result in zip(origins, configs, results, strict=True)]
    trained = {"source": str(path), "full_train": full_train, "device": str(torch_device), "threads": threads,
               "trained": datetime.now(UTC).isoformat(timespec="seconds"), "members": listed}
    ensemble = [_entry(config, configs[0], origin) for config, origin in zip(configs[1:], origins[1:], strict=True)]
    return write_run(out_dir, export, configs[0], combined, splits, trained, ensemble)
