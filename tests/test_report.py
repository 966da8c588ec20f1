"""`python -m pipnet_lit.compare`: the comparison table, paper column, CED figures, run discovery, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hydra_job import job_env
from pipnet_lit import compare as compare_module
from pipnet_lit.compare import collect_runs, main, make_report, read_per_image, run_labels
from pipnet_lit.paper import PAPER_NMES, paper_nmes

REPO = Path(__file__).parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def parse_table(markdown: str, first_column: str = "subset") -> list[dict[str, str]]:
    """The rows of the markdown table whose header starts with `first_column`, as {header: cell}."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    assert set(lines[start + 1].replace("|", "")) == {"-"}
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def write_run(
    folder: Path,
    results: dict[str, dict[str, float]],
    backbone: str | None = "resnet18",
    meta: str = "300w",
    per_image: dict[str, dict[str, list[float]]] | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """A run folder as train / eval write it: test_metrics.json, .hydra/*.yaml, maybe the per-image CSV."""
    folder.mkdir(parents=True)
    (folder / "test_metrics.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    if backbone is not None:
        hydra = folder / ".hydra"
        hydra.mkdir()
        cfg = {"run_name": folder.name, "data": {"meta": meta}, "model": {"backbone": backbone}}
        (hydra / "config.yaml").write_text(yaml.safe_dump(cfg))
        (hydra / "overrides.yaml").write_text(yaml.safe_dump(overrides or []))
    if per_image is not None:
        keys = sorted({k for columns in per_image.values() for k in columns})
        lines = ["subset,name," + ",".join(keys)]
        for subset, columns in per_image.items():
            for i in range(len(columns[keys[0]])):
                lines.append(f"{subset},img{i}," + ",".join(repr(float(columns[k][i])) for k in keys))
        (folder / "test_per_image.csv").write_text("\n".join(lines) + "\n")
    return folder


def per_image_300w(rng: np.random.Generator, scale: float) -> dict[str, dict[str, list[float]]]:
    """Per-image NMEs of 3 common + 2 challenge faces; full is both."""
    common = {k: list(rng.uniform(0.01, 0.08, 3) * scale) for k in ("nme_io", "nme_ip")}
    challenge = {k: list(rng.uniform(0.03, 0.12, 2) * scale) for k in ("nme_io", "nme_ip")}
    full = {k: common[k] + challenge[k] for k in common}
    return {"300w_full": full, "300w_common": common, "300w_challenge": challenge}


RESULTS_R101 = {
    "300w_full": {"nme_io": 0.03312, "nme_ip": 0.04671, "fr@0.10": 0.0123, "auc@0.10": 0.61234},
    "300w_common": {"nme_io": 0.02700, "nme_ip": 0.03800, "fr@0.10": 0.0, "auc@0.10": 0.70011},
    "300w_challenge": {"nme_io": 0.05871, "nme_ip": 0.08012, "fr@0.10": 0.0741, "auc@0.10": 0.40457},
}
RESULTS_R18 = {
    "300w_full": {"nme_io": 0.04011, "nme_ip": 0.05512, "fr@0.10": 0.0222, "auc@0.10": 0.55555},
    "300w_common": {"nme_io": 0.03456, "nme_ip": 0.04321, "fr@0.10": 0.0101, "auc@0.10": 0.60606},
    "300w_challenge": {"nme_io": 0.06543, "nme_ip": 0.09876, "fr@0.10": 0.0909, "auc@0.10": 0.33333},
}


@pytest.fixture
def two_runs(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    sweep = tmp_path / "sweep"
    write_run(
        sweep / "r101", RESULTS_R101, "resnet101", per_image=per_image_300w(rng, 1.0),
        overrides=["+experiment=300w_r101", "model.lr=1e-4"],
    )  # fmt: skip
    write_run(
        sweep / "r18", RESULTS_R18, "resnet18", per_image=per_image_300w(rng, 1.5),
        overrides=["+experiment=300w_r101", "model.backbone=resnet18"],
    )  # fmt: skip
    return sweep


def check_numbers(rows: list[dict[str, str]], expected: dict[str, dict[str, dict[str, float]]]) -> None:
    """Each run's each subset is one row, and each cell equals test_metrics.json (NME/FR %, AUC fraction)."""
    assert sorted((r["run"], r["subset"]) for r in rows) == sorted(
        (run, subset) for run, results in expected.items() for subset in results
    )
    for row in rows:
        for metric, value in expected[row["run"]][row["subset"]].items():
            if metric.startswith("auc"):
                assert float(row[metric]) == pytest.approx(value, abs=5e-5), (row, metric)
            else:
                assert float(row[f"{metric} (%)"]) == pytest.approx(100 * value, abs=5e-3), (row, metric)


def test_table_numbers_equal_the_runs_metrics_and_the_paper_column(two_runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(two_runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    markdown = (out / "report.md").read_text()
    assert markdown in printed
    rows = parse_table(markdown)
    check_numbers(rows, {"r101": RESULTS_R101, "r18": RESULTS_R18})
    # subsets in the dataset YAML order (full, common, challenge), runs in natural order (18 < 101) in each
    assert [(r["subset"], r["run"]) for r in rows[:3]] == [
        ("300w_full", "r18"), ("300w_full", "r101"), ("300w_common", "r18"),
    ]  # fmt: skip
    header = list(rows[0])
    assert header[:4] == ["subset", "run", "backbone", "nme_io (%)"]
    assert header.index("nme_ip (%)") < header.index("fr@0.10 (%)") < header.index("auc@0.10")

    by_key = {(r["run"], r["subset"]): r for r in rows}
    # the ResNet-101 rows carry the published NME and run - paper, in percentage points
    for subset, paper, diff in (
        ("300w_full", 3.19, 0.12),
        ("300w_common", 2.78, -0.08),
        ("300w_challenge", 4.89, 0.98),
    ):
        row = by_key[("r101", subset)]
        assert row["backbone"] == "resnet101" and row["paper metric"] == "nme_io"
        assert float(row["paper (%)"]) == paper
        assert float(row["Δ (%)"]) == pytest.approx(diff, abs=1e-9)
        assert float(row["Δ (%)"]) == pytest.approx(100 * RESULTS_R101[subset]["nme_io"] - paper, abs=5e-3)
    # no published ResNet-18 number: nothing to compare with
    assert by_key[("r18", "300w_full")]["paper (%)"] == "-" and by_key[("r18", "300w_full")]["Δ (%)"] == "-"

    runs = parse_table(markdown, "run")
    assert [(r["run"], r["backbone"], r["data.meta"], r["primary"]) for r in runs] == [
        ("r18", "resnet18", "300w", "nme_io"), ("r101", "resnet101", "300w", "nme_io"),
    ]  # fmt: skip
    assert runs[0]["overrides that differ"] == "`model.backbone=resnet18`"
    assert runs[1]["overrides that differ"] == "`model.lr=1e-4`"


def test_one_ced_figure_per_subset_from_the_primary_per_image_nmes(two_runs, tmp_path, monkeypatch):
    plotted: dict[str, list[tuple[str, np.ndarray]]] = {}
    real_plot = compare_module.plot_ced

    def spy(curves, path, title, xlabel, threshold=0.1):
        plotted[Path(path).name] = [(label, np.asarray(nmes)) for label, nmes in curves]
        return real_plot(curves, path, title, xlabel, threshold)

    monkeypatch.setattr(compare_module, "plot_ced", spy)
    out = tmp_path / "out"
    result = make_report([two_runs], out)
    names = {"ced_300w_full.png", "ced_300w_common.png", "ced_300w_challenge.png"}
    assert {p.name for p in result.figures} == names == set(plotted)
    for name in names:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000
    # each curve is the run's primary NME (nme_io, the 300W YAML's first metric) of that subset, per image
    for run in ("r101", "r18"):
        per_image = read_per_image(two_runs / run / "test_per_image.csv")
        for subset in ("300w_full", "300w_common", "300w_challenge"):
            curves = dict(plotted[f"ced_{subset}.png"])
            np.testing.assert_array_equal(curves[run], per_image[subset]["nme_io"])
    assert len(plotted["ced_300w_full.png"][0][1]) == 5
    assert "`ced_300w_full.png`: r18, r101 (nme_io)" in result.markdown


def test_runs_without_per_image_file_are_left_out_of_the_ced_with_a_note(tmp_path):
    rng = np.random.default_rng(1)
    write_run(tmp_path / "runs" / "with", RESULTS_R18, per_image=per_image_300w(rng, 1.0))
    write_run(tmp_path / "runs" / "without", RESULTS_R101, backbone=None)  # no .hydra, no per-image CSV
    result = make_report([tmp_path / "runs"], tmp_path / "out")
    assert "- without: no test_per_image.csv, left out of the CED figures" in result.markdown
    assert "`ced_300w_full.png`: with (nme_io)" in result.markdown
    assert len(result.figures) == 3
    # without a config the backbone is unknown: the numbers are still there, the paper column is not
    rows = {(r["run"], r["subset"]): r for r in parse_table(result.markdown)}
    assert rows[("without", "300w_full")]["backbone"] == "?"
    assert "paper (%)" not in rows[("without", "300w_full")]
    check_numbers(list(rows.values()), {"with": RESULTS_R18, "without": RESULTS_R101})

    only = make_report([tmp_path / "runs" / "without"], tmp_path / "out2")
    assert only.figures == [] and not list((tmp_path / "out2").glob("*.png"))
    assert "No CED figures: no run has a test_per_image.csv" in only.markdown


def test_eval_runs_take_the_backbone_from_their_checkpoint(tmp_path):
    """An eval run's config has no model: the backbone comes from the checkpoint it tested."""
    import torch

    workdir = tmp_path / "work"
    (workdir / "ckpts").mkdir(parents=True)
    torch.save(
        {"hyper_parameters": {"backbone": "resnet101"}, "state_dict": {}}, workdir / "ckpts" / "m.ckpt"
    )
    run = write_run(tmp_path / "eval" / "ev", RESULTS_R101, backbone=None)
    (run / ".hydra").mkdir()
    cfg = {
        "run_name": "ev",
        "ckpt_path": "ckpts/m.ckpt",
        "data": {"meta": "300w"},
    }  # relative to the job's cwd
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"cwd": str(workdir)}}}))
    result = make_report([run], tmp_path / "out")
    row = next(r for r in parse_table(result.markdown) if r["subset"] == "300w_challenge")
    assert (row["run"], row["backbone"], row["paper (%)"], row["Δ (%)"]) == (
        "ev",
        "resnet101",
        "4.89",
        "+0.98",
    )


def test_chains_are_labelled_chain_round_k_in_natural_order(tmp_path):
    chain = tmp_path / "train" / "synthetic_ssl"
    for k in (0, 1, 2, 10):
        write_run(
            chain / f"round_{k}", {"synthetic_ssl_full": {"nme_io": 0.05 - 0.001 * k}}, meta="synthetic_ssl"
        )
    (chain / "round_10" / "checkpoints").mkdir()
    (chain / "round_10" / "checkpoints" / "test_metrics.json").write_text("{}")  # not searched
    expected = [f"synthetic_ssl/round_{k}" for k in (0, 1, 2, 10)]
    assert [r.label for r in collect_runs([chain])] == expected
    assert [r.label for r in collect_runs([tmp_path / "train"])] == expected
    assert [r.label for r in collect_runs([chain / "round_2"])] == ["synthetic_ssl/round_2"]
    # the same run given twice (directly and inside its chain) is read once
    assert len(collect_runs([chain / "round_1", chain])) == 4
    assert run_labels([tmp_path / "a" / "x", tmp_path / "b" / "x"]) == ["a/x", "b/x"]


def test_a_folder_without_runs_says_so(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert f"no runs in {tmp_path / 'empty'}: no test_metrics.json in it or below it" in err
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "report").exists()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "test_metrics.json").write_text('{"300w_full": {"nme_io": "high"}}')
    assert main([str(bad)]) == 2
    assert f"{bad / 'test_metrics.json'}: subset '300w_full' holds a value that is not a number" in (
        capsys.readouterr().err
    )

    (bad / "test_metrics.json").write_text('{"300w_full": {"nme_io": 0.05}}')
    (bad / "test_per_image.csv").write_text("image,nme_io\na.png,0.05\n")
    assert main([str(bad)]) == 2
    assert f"{bad / 'test_per_image.csv'}: not a per-image results file" in capsys.readouterr().err


def test_paper_rows_are_the_confirmed_resnet101_numbers():
    keys = [(p.subset, p.metric, p.backbone) for p in PAPER_NMES]
    assert len(keys) == len(set(keys))
    assert {k: p.nme for k, p in zip(keys, PAPER_NMES, strict=True)} == {
        ("300w_full", "nme_io", "resnet101"): 3.19,
        ("300w_common", "nme_io", "resnet101"): 2.78,
        ("300w_challenge", "nme_io", "resnet101"): 4.89,
        ("wflw_full", "nme_io", "resnet101"): 4.31,
        ("cofw_full", "nme_io", "resnet101"): 3.08,
        ("aflw_full", "nme_crop", "resnet101"): 1.42,
    }
    assert [p.nme for p in paper_nmes("aflw_full", "ResNet101")] == [1.42]
    assert paper_nmes("aflw_full", "resnet101", ["nme_diag"]) == []
    assert paper_nmes("300w_full", None) == [] and paper_nmes("300w_full", "resnet18") == []


@pytest.mark.slow
def test_report_over_two_real_tiny_training_runs(tmp_path):
    """Two real runs (train entry point, as a user runs it), then the report command over their folder."""
    env = job_env()
    for name, extra in (("a", []), ("b", ["seed=1"])):  # another seed: the runs' numbers differ
        result = subprocess.run(
            [
                sys.executable, "-m", "pipnet_lit.train", "+experiment=synthetic",
                "data.sources.synthetic.n_train=8", "data.sources.synthetic.n_common=3",
                "data.sources.synthetic.n_challenge=2", "data.sources.synthetic.n_wild=0",
                "data.sources.synthetic.image_size=80", "data.load_unlabeled=false",
                "data.input_size=64", "data.batch_size=2", "data.num_workers=0", "trainer.max_epochs=1",
                "model.pretrained=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
                f"run_name={name}", f"paths.root_dir={tmp_path}", *extra,
            ],
            capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    runs_dir = tmp_path / "outputs" / "train"
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "pipnet_lit.compare", str(runs_dir), "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {name: json.loads((runs_dir / name / "test_metrics.json").read_text()) for name in ("a", "b")}
    assert set(expected["a"]) == {"synthetic_full", "synthetic_common", "synthetic_challenge"}
    assert expected["a"]["synthetic_full"]["nme_io"] != expected["b"]["synthetic_full"]["nme_io"]
    rows = parse_table(result.stdout)
    check_numbers(rows, expected)
    assert {r["backbone"] for r in rows} == {"resnet18"}
    assert parse_table((out / "report.md").read_text()) == rows
    runs = parse_table(result.stdout, "run")
    assert [r["overrides that differ"] for r in runs] == ["`run_name=a`", "`run_name=b` `seed=1`"]
    # CED figures exist exactly when a run wrote per-image NMEs; a run without them is named in a note
    with_csv = [name for name in ("a", "b") if (runs_dir / name / "test_per_image.csv").is_file()]
    pngs = sorted(p.name for p in out.glob("ced_*.png"))
    if with_csv:
        assert pngs == ["ced_synthetic_challenge.png", "ced_synthetic_common.png", "ced_synthetic_full.png"]
        assert f"`ced_synthetic_full.png`: {', '.join(with_csv)} (nme_io)" in result.stdout
    else:
        assert pngs == []
    for name in {"a", "b"} - set(with_csv):
        assert f"- {name}: no test_per_image.csv, left out of the CED figures" in result.stdout
