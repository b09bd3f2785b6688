"""The comparison, on members' results written by hand: statistics and delta-m recomputed independently."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pixcore import ConfigError
from pixcore.sweep import compare, plan_sweep

#: The directions the test relies on, as the metric classes' documentation states them.
HIGHER_IS_BETTER = {"semseg/miou": True, "semseg/pixel_acc": True, "depth/abs_rel": False, "depth/delta1": True,
                    "depth/sq_rel": False}


def _results(rng: np.random.Generator) -> dict[str, dict[str, object]]:
    return {
        "semseg": {"iou/0": float(rng.uniform()), "miou": float(rng.uniform(0.2, 0.8)),
                   "pixel_acc": float(rng.uniform(0.5, 0.9)), "protocol": {"miou": "confusion-pooled/..."}},
        "depth": {"abs_rel": float(rng.uniform(0.1, 0.5)), "delta1": float(rng.uniform(0.3, 0.9)),
                  "sq_rel": 0.0, "protocol": {"depth_errors": "pooled/..."}},
    }


@pytest.fixture
def written_sweep(tiny_config: Path, tmp_path: Path) -> tuple[Path, dict[tuple[str, int], dict]]:
    """A planned 2 x 2 sweep whose members' metrics.json are written by hand; one has not finished."""
    out = tmp_path / "sweep"
    plan = plan_sweep(tiny_config, ["trainer.lr=0.01,0.001"], seeds=2, out=out)
    rng = np.random.default_rng(7)
    written: dict[tuple[str, int], dict] = {}
    for member in plan.members:
        folder = plan.folder(member)
        folder.mkdir()
        results = _results(rng)
        lr = member.setting[0][1]
        if lr == "0.001":
            results["depth"]["sq_rel"] = 0.25  # a change against a baseline of 0: undefined, skipped
        if (lr, member.seed) == ("0.001", 1):
            (folder / "metrics.json").write_text(json.dumps(results)[:40])  # cut short: not finished
            continue
        (folder / "metrics.json").write_text(json.dumps(results))
        written[(lr, member.seed)] = results
    return out, written


def _flat(results: dict) -> dict[str, float]:
    return {f"{task}/{key}": value for task, values in results.items() for key, value in values.items()
            if isinstance(value, float)}


def test_statistics_and_delta_m_match_a_hand_computation(written_sweep: tuple[Path, dict]) -> None:
    out, written = written_sweep
    comparison = compare(out)
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert comparison.baseline == "trainer.lr=0.01"  # the first setting by default
    flat = {key: _flat(results) for key, results in written.items()}
    for lr, seeds in (("0.01", [0, 1]), ("0.001", [0])):
        for metric in flat[(lr, 0)]:
            values = np.array([flat[(lr, seed)][metric] for seed in seeds])
            row = next(r for r in rows if r["trainer.lr"] == lr and r["metric"] == metric)
            assert int(row["n"]) == len(seeds)
            assert float(row["mean"]) == pytest.approx(values.mean(), rel=1e-12)
            assert float(row["min"]) == values.min() and float(row["max"]) == values.max()
            if len(seeds) > 1:
                assert float(row["std"]) == pytest.approx(np.std(values, ddof=1), rel=1e-12)
            else:
                assert row["std"] == ""  # no spread from one seed
    # delta-m by its formula: per task the mean of (-1)^l (M - B) / |B| * 100, then the mean over tasks.
    mean = {lr: {m: np.mean([flat[(lr, s)][m] for s in seeds]) for m in HIGHER_IS_BETTER}
            for lr, seeds in (("0.01", [0, 1]), ("0.001", [0]))}
    tasks: dict[str, list[float]] = {}
    for metric, higher in HIGHER_IS_BETTER.items():
        if metric == "depth/sq_rel":
            continue  # its baseline is 0
        change = (mean["0.001"][metric] - mean["0.01"][metric]) / abs(mean["0.01"][metric]) * 100
        tasks.setdefault(metric.split("/")[0], []).append(change if higher else -change)
    expected = np.mean([np.mean(changes) for changes in tasks.values()])
    summary = {s.label: s for s in comparison.settings}
    assert summary["trainer.lr=0.001"].delta_m == pytest.approx(expected, rel=1e-12)
    assert summary["trainer.lr=0.01"].delta_m == 0.0
    delta_row = next(r for r in rows if r["trainer.lr"] == "0.001" and r["metric"] == "delta_m")
    assert float(delta_row["mean"]) == pytest.approx(expected, rel=1e-12)
    skipped = summary["trainer.lr=0.001"].delta_m_skipped
    assert set(skipped) == {"depth/sq_rel"} and "baseline's mean is 0" in skipped["depth/sq_rel"]
    assert summary["trainer.lr=0.001"].missing == ["trainer.lr=0.001__seed=1"]
    # The chosen metrics are those with a direction; iou/0 has none.
    assert comparison.chosen == list(HIGHER_IS_BETTER) and comparison.directions["semseg/iou/0"] is None
    assert {k: comparison.directions[k] for k in HIGHER_IS_BETTER} == HIGHER_IS_BETTER


def test_the_comparison_files_hold_the_same_numbers(written_sweep: tuple[Path, dict]) -> None:
    out, written = written_sweep
    comparison = compare(out, baseline={"trainer.lr": "0.001"}, metrics=["depth/abs_rel"])
    data = json.loads((out / "comparison.json").read_text())
    assert data["baseline"] == "trainer.lr=0.001" and "ddof=1" in data["std"]
    setting = next(s for s in data["settings"] if s["label"] == "trainer.lr=0.01")
    assert setting["metrics"]["depth/abs_rel"]["values"] == {"0": written[("0.01", 0)]["depth"]["abs_rel"],
                                                            "1": written[("0.01", 1)]["depth"]["abs_rel"]}
    base = written[("0.001", 0)]["depth"]["abs_rel"]
    ours = np.mean([written[("0.01", s)]["depth"]["abs_rel"] for s in (0, 1)])
    assert setting["delta_m"] == pytest.approx(-(ours - base) / base * 100, rel=1e-12)
    markdown = (out / "comparison.md").read_text()
    assert "| 0.001 (baseline) | 1 |" in markdown and "| depth/abs_rel | lower |" in markdown
    assert "Not finished (not in the table): trainer.lr=0.001__seed=1" in markdown
    plots = sorted((out / "plots").glob("*.png"))
    assert [p.name for p in plots] == ["depth-abs_rel__vs__trainer.lr.png"] and comparison.files[-1] == plots[0]
    assert Image.open(plots[0]).size[0] > 200


def test_compare_names_what_it_lacks(written_sweep: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = written_sweep
    with pytest.raises(ConfigError, match="--metric depth/abs_rl: not a metric of the finished members; they "
                                          "report semseg/iou/0, semseg/miou"):
        compare(out, metrics=["depth/abs_rl"])
    with pytest.raises(Exception, match="holds no sweep"):
        compare(tmp_path / "nothing")
