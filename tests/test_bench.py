"""`python -m ferlib bench --quick`: every table and JSON section has its rows, numbers positive and finite
(no timing assertions: timings depend on the machine)."""
from __future__ import annotations

import json
import math

import pytest

from ferlib import bench
from ferlib.bench import BACKENDS, BenchConfig, md_table, spread
from ferlib.cli import main
from ferlib.errors import InputError
from tests.helpers import shared_file


def _positive(rows: list[dict], *, allow_zero=("max_abs_diff_vs_torch", "cached", "extracted", "share")) -> None:
    for r in rows:
        for k, v in r.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v is None:
                continue
            assert math.isfinite(v), (k, r)
            assert v > 0 or (k in allow_zero and v >= 0), (k, r)


def test_bench_quick_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "SHARED_DATA", tmp_path / "no-data")  # the skip path; data test below
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    md = capsys.readouterr().out
    (jpath,) = out.glob("*-bench-quick.json")
    (mpath,) = out.glob("*-bench-quick.md")
    assert mpath.read_text().strip() == md.strip()
    data = json.loads(jpath.read_text())
    cfg = BenchConfig.quick_config()
    roles, nb, nt = ("landmark", "image"), len(cfg.batches), len(cfg.threads)

    assert data["command"].startswith("python -m ferlib bench --quick")
    assert data["meta"]["clip"]["frames"] == cfg.frames and data["meta"]["cores"] >= 1
    assert set(data["models"]) == set(roles)
    assert [r["key"] for r in data["mesh_alone"]] == ["decode", "extractor", "face_mesh", "decode+extractor",
                                                      "decode+face_mesh"]
    assert {(r["model"], r["threads"], r["batch"]) for r in data["pipeline"]} == {
        (m, t, b) for m in roles for t in cfg.threads for b in cfg.batches}
    assert all(r["frames"] == cfg.frames and r["faces"] >= 1 for r in data["pipeline"])
    assert len(data["raw_model"]) == len(roles) * len(BACKENDS) * nb * nt
    assert all(r["max_abs_diff_vs_torch"] <= 1e-4 for r in data["raw_model"])
    for role in roles:
        stages = [r["stage"] for r in data["stages"] if r["model"] == role]
        assert stages == ["decode", "landmarks", "prepare", "model", "draw", "total"]
        assert sum(r["share"] for r in data["stages"] if r["model"] == role and r["stage"] != "total") == \
            pytest.approx(1.0)
    assert [r["batch"] for r in data["ratios"]] == list(cfg.batches)
    assert len(data["targets"]) == 5 and all(isinstance(t["met"], bool) for t in data["targets"])
    assert data["dataset_import"] == [] and any("dataset import skipped" in n for n in data["notes"])
    (ft,) = data["finetune"]
    assert ft["samples"] == cfg.finetune_samples and ft["epochs"] == cfg.finetune_epochs
    for section in ("mesh_alone", "pipeline", "raw_model", "stages", "ratios", "targets", "finetune"):
        assert data[section], section
        _positive(data[section])
    for r in data["pipeline"] + data["raw_model"] + data["mesh_alone"]:
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
    for title in ("## Targets", "## MediaPipe alone", "## Pipeline FPS", "## Ratios", "## Stage breakdown",
                  "## Raw model", "## Dataset import", "## Fine-tuning", "## User paths"):
        assert title in md
    _check_paths(data, cfg)


def _check_paths(data: dict, cfg: BenchConfig) -> None:
    """The user-path section: predict end to end per model x threads, per-frame rows, ratios."""
    keys = {(m, t) for m in bench.PATH_ROLES for t in cfg.threads}
    assert {(r["model"], r["threads"]) for r in data["paths_predict"]} == keys
    for r in data["paths_predict"]:
        assert r["backend"] == "onnx" and r["frames"] == cfg.frames and r["runs"] == cfg.path_rounds
        assert r["wall_s"] > r["startup_s"] > 0 and r["loop_s"] > 0
    fr = {(r["key"], r.get("threads")) for r in data["paths_frames"]}
    assert {("decode", None), ("face_mesh", None), ("decode+face_mesh", None)} <= fr
    for m, t in keys:
        assert {(f"pipeline/{m}", t), (f"decode+pipeline/{m}", t), (f"group/{m}", t), (f"landmarks/{m}", t),
                (f"prepare/{m}", t), (f"model/{m}", t)} <= fr
    assert all(r["faces"] == 5 for r in data["paths_frames"] if r["key"].startswith("group/"))
    assert len(data["paths_ratios"]) == len(keys) + 1
    for section in ("paths_predict", "paths_frames", "paths_ratios"):
        _positive(data[section])


def test_bench_only_paths(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--only", "paths", "--out", str(out)]) == 0
    md = capsys.readouterr().out
    (jpath,) = out.glob("*-paths-quick.json")
    data = json.loads(jpath.read_text())
    assert data["command"] == f"python -m ferlib bench --quick --only paths --out {out}"
    assert data["pipeline"] == [] and data["finetune"] == []
    _check_paths(data, BenchConfig.quick_config())
    assert "## User paths" in md and "## Targets" not in md and "ferlib predict CLIP" in md


@pytest.mark.data
def test_bench_dataset_import_fer2013(monkeypatch):
    monkeypatch.setattr(bench, "SHARED_DATA", shared_file("fer2013.zip").parent)
    rows, skipped = bench.bench_dataset_import(BenchConfig.quick_config())
    assert skipped is None
    first, cached = rows
    assert first["images"] == cached["images"] == 8
    assert first["extracted"] == 8 and cached["cached"] == 8 and cached["extracted"] == 0
    assert first["detection_rate"] == cached["detection_rate"] > 0
    _positive(rows)


def test_spread_and_table():
    s = spread([3.0, 1.0, 2.0, 4.0, 5.0])
    assert s["median_ms"] == 3.0 and s["n"] == 5 and s["p10_ms"] < 3.0 < s["p90_ms"]
    with pytest.raises(InputError, match="no timing samples"):
        spread([])
    table = md_table([{"a": 1.23456, "b": True}, {"a": 12345.6, "b": False}], [("a", "A"), ("b", "B")])
    assert table.splitlines() == ["| A | B |", "|---|---|", "| 1.23 | met |", "| 12,346 | **not met** |"]
