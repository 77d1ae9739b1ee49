"""The image store and the loader: built in chunks, shared read-only by every process, placed on the device, on
the host or streamed, and the bad cases (disk too small, a cache changed under a run, two builders at once)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.datasets.test_datasets import write_class_folders
from tuner.datasets import building, data_warnings, folder, load_splits, loader, store
from tuner.datasets.cache import cache_dir
from tuner.datasets.images import decode
from tuner.datasets.splits import Images
from tuner.errors import TuneError
from tuner.spec import RunConfig
from tuner.train import evaluate, fit


@pytest.fixture(autouse=True)
def _fresh_load_cache():
    load_splits.cache_clear()
    yield
    load_splits.cache_clear()


def mapped_file(address: int) -> tuple[str | None, str]:
    """(the file whose memory mapping holds `address` in this process, if any; the mapping's permissions)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(v, 16) for v in fields[0].split("-"))
        if start <= address < end:
            return (fields[5] if len(fields) == 6 else None), fields[1]
    return None, ""


def test_the_store_is_written_a_chunk_at_a_time_and_holds_every_image_as_decoded(tmp_path, monkeypatch):
    root = write_class_folders(tmp_path / "colors", per_class=7, size=(20, 16))
    monkeypatch.setattr(building, "CHUNK_BYTES", 3 * 12 * 12 * 4)  # 4 images a chunk: 6 chunks for 21 files
    puts = []
    real_put = store.Writer.put
    monkeypatch.setattr(store.Writer, "put", lambda self, rows: (puts.append(len(rows)), real_put(self, rows)))
    built, fresh = folder.cached(root, 12)
    assert not fresh and max(puts) <= 16 and sum(puts) == 21 and len(puts) > 1
    files = sorted(root.rglob("*.png"))
    expected = {p.relative_to(root).as_posix(): decode(p, 3, 12) for p in files}
    reopened, fresh = folder.cached(root, 12)
    assert fresh and tuple(reopened.x.shape) == (21, 3, 12, 12)
    scan = folder.scan_folder(root)
    for row, (relative, _, label) in enumerate(scan.files):
        assert torch.equal(reopened.x[row], expected[relative]) and int(reopened.y[row]) == label


def test_every_split_reads_the_one_read_only_mapping_and_none_copies_it(tmp_path):
    root = write_class_folders(tmp_path / "colors", per_class=8, size=(12, 12))
    splits = load_splits(str(root), "", 0.2, 0, "cpu")
    for part in (splits.train, splits.val, splits.test):
        path, permissions = mapped_file(part.pixels.data_ptr())
        assert path == splits.info["cache"] and "w" not in permissions  # the file itself, read-only, not a copy
        assert part.rows is not None and len(part) < len(part.pixels)
    assert splits.info["placement"] == "host" and splits.info["placement_line"].startswith("data: on the host")


def test_a_disk_too_small_is_said_before_decoding_with_the_size_needed(tmp_path, monkeypatch, cli):
    root = write_class_folders(tmp_path / "colors", per_class=4, size=(12, 12))
    decoded = []
    monkeypatch.setattr(building, "decode", lambda *args: decoded.append(args))
    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    result = cli("data", root, "--image-size", "64")
    needed = store.file_bytes(12, (3, 64, 64)) + 1_000_000
    assert result.exit_code == 2 and decoded == []
    assert f"the image cache needs {needed / 1e9:.2f} GB" in result.output and "0.00 GB free" in result.output
    assert "Traceback" not in result.output and not list(cache_dir().glob("*.partial"))


def test_a_cache_truncated_under_a_running_study_stops_it_with_one_line(tmp_path):
    root = write_class_folders(tmp_path / "colors", per_class=8, size=(12, 12))
    splits = load_splits(str(root), "", 0.2, 0, "cpu")
    path = Path(splits.info["cache"])
    with path.open("r+b") as f:
        f.truncate(store.HEADER_BYTES + 10)
    with pytest.raises(TuneError, match="was changed or truncated while this process read it"):
        evaluate(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3)), splits.val)
    load_splits.cache_clear()
    again = load_splits(str(root), "", 0.2, 0, "cpu")  # a new run: the torn file is rebuilt
    assert again.info["cache_fresh"] is False and len(again.train) == len(splits.train)


def test_two_processes_building_one_cache_build_it_once(tmp_path):
    root = write_class_folders(tmp_path / "colors", per_class=30, size=(40, 40))
    lock = store.building(folder.cache_path(folder.scan_folder(root).root, 16))
    script = textwrap.dedent(f"""
        from tuner.datasets import folder
        built, fresh = folder.cached({str(root)!r}, 16)
        print("fresh" if fresh else "built", len(built.y))
    """)
    with lock:  # a first builder holds the lock: both processes wait, then one builds and the other reads
        runs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
        waiting = [run.stderr.readline() for run in runs]
    outputs = sorted(run.communicate()[0].strip() for run in runs)
    assert all("another tune process is building the image cache" in line for line in waiting)
    assert outputs == ["built 90", "fresh 90"]
    assert len(list(cache_dir().glob("*.images"))) == 1


def test_streamed_epochs_visit_every_image_once_in_chunk_shuffled_order(monkeypatch):
    monkeypatch.setattr(loader, "CHUNK_BYTES", 40)
    monkeypatch.setattr(loader, "WINDOW_BYTES", 160)
    pixels = torch.arange(100, dtype=torch.uint8).repeat_interleave(10).reshape(100, 1, 10, 1)
    images = Images(pixels, torch.arange(100), torch.device("cpu"), torch.arange(100), "streamed")
    seen = [y for _, y in images.batches(8, torch.Generator().manual_seed(0))]
    order = torch.cat(seen)
    assert sorted(order.tolist()) == list(range(100)) and order.tolist() != list(range(100))
    assert all(torch.equal(x[:, 0, 0, 0].long(), y) for x, y in images.batches(8, torch.Generator().manual_seed(0)))
    window = order[:16].tolist()  # the first window mixes 4 chunks of 4 consecutive rows, nothing else
    assert len({v // 4 for v in window}) == 4


def test_the_placement_follows_the_memory_there_is_and_is_said(monkeypatch):
    monkeypatch.delenv(loader.PLACEMENT_ENV, raising=False)
    monkeypatch.setattr(loader, "memory_room", lambda: (4_000_000_000, "the cgroup's memory limit, 4.00 GB"))
    assert loader.choose(1_000_000_000, torch.device("cpu")).mode == "host"
    streamed = loader.choose(3_000_000_000, torch.device("cpu"))
    assert streamed.mode == "streamed"
    assert streamed.line() == ("data: streamed from disk, chunk-shuffled with read-ahead (3.00 GB of images exceed "
                               "50% of the cgroup's memory limit, 4.00 GB)")
    monkeypatch.setenv(loader.PLACEMENT_ENV, "sideways")
    with pytest.raises(TuneError, match="use one of device, host, streamed"):
        loader.choose(1, torch.device("cpu"))


def test_a_streamed_run_trains_as_well_as_one_in_memory(tmp_path, monkeypatch):
    root = write_class_folders(tmp_path / "colors", per_class=12, size=(12, 12))
    config = RunConfig(dataset=str(root), model="mlp", epochs=3, batch_size=8, lr=0.01, optimizer="adam")
    in_memory = fit(config, load_splits(str(root), "", 0.25, 0, "cpu"))
    load_splits.cache_clear()
    monkeypatch.setenv(loader.PLACEMENT_ENV, "streamed")
    monkeypatch.setattr(loader, "CHUNK_BYTES", 3 * 12 * 12 * 2)
    splits = load_splits(str(root), "", 0.25, 0, "cpu")
    assert splits.train.mode == "streamed" and "TUNE_DATA_PLACEMENT=streamed" in splits.info["placement_line"]
    assert data_warnings(splits, None, "", "") == [splits.info["placement_line"]]  # what tune start prints
    streamed = fit(config, splits)
    assert streamed.test_accuracy == pytest.approx(in_memory.test_accuracy, abs=0.34)
    assert streamed.history[-1].val_accuracy > 0.5


def test_tune_data_says_where_a_run_would_hold_the_images(tmp_path, cli):
    root = write_class_folders(tmp_path / "colors", per_class=4, size=(12, 12))
    result = cli("data", root)
    assert result.exit_code == 0 and "On cpu, data: on the host" in result.output


def test_channel_statistics_of_a_large_store_come_from_chunked_histograms(tmp_path, monkeypatch):
    from tuner.datasets import splits as splits_module

    root = write_class_folders(tmp_path / "colors", per_class=10, size=(16, 16))
    train = folder.as_source(*folder.cached(root)).train
    exact = splits_module.channel_stats(train)
    monkeypatch.setattr(splits_module, "EXACT_STATS_ELEMENTS", 0)
    monkeypatch.setattr(splits_module, "STATS_CHUNK_BYTES", 3 * 16 * 16 * 3)  # 3 images a chunk
    chunked = splits_module.channel_stats(train)
    assert chunked[0] == pytest.approx(exact[0], abs=1e-6) and chunked[1] == pytest.approx(exact[1], abs=1e-5)


def test_a_killed_builders_partial_file_is_removed_by_the_next_build(tmp_path):
    root = write_class_folders(tmp_path / "colors", per_class=6, size=(20, 20))
    path = folder.cache_path(folder.scan_folder(root).root, 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = path.with_name(path.name + ".99999.partial")  # what `kill -9` during `tune data` leaves, full size
    stale.write_bytes(b"\0" * 4096)
    built, fresh = folder.cached(root, 16)
    assert len(built.y) == 18 and not stale.exists()
    assert not list(path.parent.glob("*.partial"))
