"""Seed aggregates of self-training chains (`pipnet_lit.ssl.aggregate`): grouping chains that differ only in
seed, labels, mean ± sample std per round checked by hand, seeds.md / .csv / .png, warnings, errors, the
report hook and the W&B offline run."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from pipnet_lit.compare import main as report_main
from pipnet_lit.ssl.aggregate import (
    POOL_SUBSET,
    AggregateError,
    aggregate,
    find_chains,
    group_by_seed,
    log_seed_summary_to_wandb,
    print_seed_summary,
    summarize_chains,
    write_seed_summary,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FULL, WILD = "synthetic_ssl_full", "synthetic_ssl_wild"
CURRICULUM = ["cls3", "cls2", "std", "std", "std"]
PLAIN = ["std", "std", "std"]


def nme_of(variant: str, seed: int, k: int) -> float:
    """Round k's full-subset NME: curriculum 0.10, 0.12, 0.14 for seeds 0, 1, 2 minus 0.01 per round;
    plain 0.20 + 0.02 * seed minus 0.01 per round."""
    base = {"curriculum": 0.10 + 0.02 * seed, "nocurriculum": 0.20 + 0.02 * seed}[variant]
    return round(base - 0.01 * k, 10)


def write_chain(
    base: Path,
    variant: str,
    seed: int,
    *,
    rounds: int | None = None,
    chain_json: bool = True,
    with_runs: bool = False,
    swept_variant: bool = True,
) -> Path:
    """A chain folder as a multirun leaves it: <base>/seed=<s>,ssl=<variant>/ with rounds.json, chain.json
    and (with_runs) round_<k>/test_metrics.json."""
    schedule = CURRICULUM if variant == "curriculum" else PLAIN
    swept = [f"seed={seed}"] + [f"ssl={variant}"] * swept_variant
    folder = base / ",".join(swept)
    folder.mkdir(parents=True)
    last = len(schedule) if rounds is None else rounds
    entries = []
    for k in range(last + 1):
        nme = nme_of(variant, seed, k)
        results = {
            FULL: {"auc@0.10": 1 - 2 * nme, "fr@0.10": 0.0, "nme_io": nme},
            WILD: {"auc@0.10": 0.5, "fr@0.10": 0.1 * seed, "nme_io": 2 * nme},
        }
        entry = {"round": k, "task": schedule[k - 1] if k else "std", "results": results}
        if k:
            entry["pseudo_labels"] = {"pl_nme": 0.05 + 0.01 * seed, "pl_cell_hit": 0.9, "pl_spearman": None}
        entries.append(entry)
        if with_runs:
            (folder / f"round_{k}").mkdir()
            (folder / f"round_{k}" / "test_metrics.json").write_text(json.dumps(results))
    (folder / "rounds.json").write_text(json.dumps({"chain": folder.name, "rounds": entries}))
    if chain_json:
        config = {
            "data.meta": "synthetic_ssl",
            "model.lr": 0.001,
            "seed": seed,
            "ssl.schedule": schedule,
        }
        chain = {
            "chain": f"{base.name}/{folder.name}",
            "config": config,
            "swept": swept,
            "schedule": schedule,
        }
        (folder / "chain.json").write_text(json.dumps(chain))
    return folder


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """3 curriculum seeds (rounds 0..5) and 2 plain seeds (rounds 0..3), plus folders never searched."""
    base = tmp_path / "synthetic_ssl"
    for seed in (0, 1, 2):
        write_chain(base, "curriculum", seed)
    for seed in (0, 1):
        write_chain(base, "nocurriculum", seed)
    hidden = base / "seed=0,ssl=curriculum" / "round_1" / "pseudo_labels"
    hidden.mkdir(parents=True)
    (hidden / "rounds.json").write_text("not json")  # below a chain and in a skipped folder: not read
    (base / ".hydra").mkdir()
    (base / ".hydra" / "rounds.json").write_text("not json")
    return base


def test_chains_group_by_seed_and_are_labelled_by_their_sweep_overrides(sweep):
    chains = find_chains([sweep])
    assert len(chains) == 5
    assert {c.name for c in chains} == {f"synthetic_ssl/seed={s},ssl=curriculum" for s in (0, 1, 2)} | {
        f"synthetic_ssl/seed={s},ssl=nocurriculum" for s in (0, 1)
    }
    variants = group_by_seed(chains)
    assert [v.label for v in variants] == ["ssl=curriculum", "ssl=nocurriculum"]
    assert [v.seeds for v in variants] == [["0", "1", "2"], ["0", "1"]]
    assert [v.rounds for v in variants] == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3]]
    assert variants[0].warnings == []
    assert any("only 2 seeds" in w and "one seed is not evidence" in w for w in variants[1].warnings)
    assert any("seeds differ between variants" in w and "lacks seed 2" in w for w in variants[1].warnings)


def test_mean_std_n_per_round_equal_a_hand_computation(sweep):
    summary = aggregate(group_by_seed(find_chains(sweep)))
    assert summary.subsets == [FULL, WILD, POOL_SUBSET]
    assert summary.metrics[FULL] == ["nme_io", "fr@0.10", "auc@0.10"]
    assert summary.primary(POOL_SUBSET) == "pl_nme"
    # curriculum round 0: NME 0.10, 0.12, 0.14 -> mean 0.12, sample std 0.02
    row = summary.row("ssl=curriculum", 0, FULL, "nme_io")
    assert (row.n, row.task) == (3, "std")
    assert row.mean == pytest.approx(0.12) and row.std == pytest.approx(0.02)
    assert row.values == pytest.approx({"0": 0.10, "1": 0.12, "2": 0.14})
    row = summary.row("ssl=curriculum", 5, FULL, "nme_io")  # 0.05, 0.07, 0.09
    assert (row.mean, row.std, row.task) == (pytest.approx(0.07), pytest.approx(0.02), "std")
    assert summary.row("ssl=curriculum", 1, FULL, "nme_io").task == "cls3"
    # plain round 3: 0.17, 0.19 -> mean 0.18, std sqrt(2 * 0.01^2 / 1) = 0.0141421
    row = summary.row("ssl=nocurriculum", 3, FULL, "nme_io")
    assert row.n == 2 and row.mean == pytest.approx(0.18) and row.std == pytest.approx(0.0141421356)
    assert summary.row("ssl=nocurriculum", 4, FULL, "nme_io") is None
    # FR on wild: 0, 0.1, 0.2 -> 0.1 ± 0.1
    row = summary.row("ssl=curriculum", 2, WILD, "fr@0.10")
    assert row.mean == pytest.approx(0.1) and row.std == pytest.approx(0.1)
    # pseudo-label metrics from round 1 on; a None value is left out
    assert summary.row("ssl=curriculum", 0, POOL_SUBSET, "pl_nme") is None
    row = summary.row("ssl=curriculum", 1, POOL_SUBSET, "pl_nme")
    assert row.mean == pytest.approx(0.06) and row.std == pytest.approx(0.01)
    assert summary.row("ssl=curriculum", 1, POOL_SUBSET, "pl_spearman") is None
    assert any(w.startswith("ssl=nocurriculum: only 2 seeds") for w in summary.warnings)


def test_one_seed_has_no_std_and_is_warned_about(tmp_path, capsys):
    write_chain(tmp_path / "sweep", "curriculum", 7, rounds=1)
    summary = aggregate(group_by_seed(find_chains(tmp_path / "sweep")))
    row = summary.row("ssl=curriculum", 0, FULL, "nme_io")
    assert (row.n, row.std) == (1, None) and row.mean == pytest.approx(0.24)
    files = write_seed_summary(summary, tmp_path / "out")
    md = files["md"].read_text()
    assert "| 0 | std | 24.00 (1) |" in md
    assert "only 1 seed (7): fewer than 3, one seed is not evidence" in md
    csv_rows = list(csv.DictReader(files["csv"].open()))
    assert csv_rows[0]["std"] == "" and csv_rows[0]["n"] == "1" and csv_rows[0]["seed_7"] == "0.24"
    print_seed_summary(summary)
    printed = capsys.readouterr().out
    assert "24.00 (1)" in printed and "one seed is not evidence" in printed


def test_seeds_md_csv_png(sweep, tmp_path):
    summary = aggregate(group_by_seed(find_chains(sweep)))
    files = write_seed_summary(summary, tmp_path / "out")
    assert set(files) == {"md", "csv", "png"}
    assert [p.name for p in files.values()] == ["seeds.md", "seeds.csv", "seeds.png"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left
    md = files["md"].read_text()
    lines = md.splitlines()
    # the primary table of the full subset: rows = rounds, columns = variants
    start = lines.index(f"## {FULL}")
    assert "| round | task | ssl=curriculum | ssl=nocurriculum |" in lines[start:]
    assert "| 0 | std | 12.00 ± 2.00 (3) | 21.00 ± 1.41 (2) |" in lines
    assert "| 1 | cls3 / std | 11.00 ± 2.00 (3) | 20.00 ± 1.41 (2) |" in lines
    assert "| 5 | std | 7.00 ± 2.00 (3) | - |" in lines
    # every metric: NME and FR in %, AUC as a fraction (1 - 2 * NME: 0.80, 0.76, 0.72 -> 0.76 ± 0.04)
    assert "| round | variant | task | nme_io (%) | fr@0.10 (%) | auc@0.10 |" in lines
    assert "| 0 | ssl=curriculum | std | 12.00 ± 2.00 (3) | 0.00 ± 0.00 (3) | 0.7600 ± 0.0400 (3) |" in lines
    # each seed's values (nocurriculum has no seed 2)
    assert "| ssl=nocurriculum | 0 | std | synthetic_ssl_full | nme_io (%) | 20.00 | 22.00 | - |" in lines
    assert "pl_spearman" not in md  # only None values
    assert "| 1 | cls3 / std | 6.00 ± 1.00 (3) | 5.50 ± 0.71 (2) |" in lines  # pseudo-labels' pl_nme
    rows = list(csv.DictReader(files["csv"].open()))
    assert list(rows[0]) == ["variant", "round", "task", "subset", "metric", "mean", "std", "n"] + [
        "seed_0",
        "seed_1",
        "seed_2",
    ]
    first = rows[0]
    assert (first["variant"], first["round"], first["task"], first["subset"], first["metric"]) == (
        "ssl=curriculum",
        "0",
        "std",
        FULL,
        "nme_io",
    )
    assert float(first["mean"]) == pytest.approx(0.12) and float(first["std"]) == pytest.approx(0.02)
    assert (first["n"], first["seed_0"], first["seed_1"], first["seed_2"]) == ("3", "0.1", "0.12", "0.14")
    plain = next(r for r in rows if r["variant"] == "ssl=nocurriculum" and r["round"] == "3")
    assert plain["seed_2"] == "" and plain["n"] == "2"
    assert len(rows) == len(summary.rows)
    assert files["png"].read_bytes()[:8] == PNG_MAGIC


def test_labels_fall_back_to_the_config_keys_that_differ(tmp_path, capsys):
    for variant in ("curriculum", "nocurriculum"):
        folder = write_chain(tmp_path / "s", variant, 0)
        meta = json.loads((folder / "chain.json").read_text())
        meta["swept"] = []
        (folder / "chain.json").write_text(json.dumps(meta))
    variants = group_by_seed(find_chains(tmp_path / "s"))
    assert [v.label for v in variants] == [
        "ssl.schedule=[cls3,cls2,std,std,std]",
        "ssl.schedule=[std,std,std]",
    ]
    print_seed_summary(aggregate(variants))  # brackets are text, not rich markup
    assert "warning: ssl.schedule=[std,std,std]: only 1 seed" in capsys.readouterr().out


def test_a_seed_only_sweep_is_one_variant_named_by_its_folder(tmp_path):
    for seed in (2, 10, 1):
        write_chain(tmp_path / "synthetic_ssl", "curriculum", seed, rounds=0, swept_variant=False)
    (variant,) = group_by_seed(find_chains(tmp_path / "synthetic_ssl"))
    assert (variant.label, variant.seeds, variant.warnings) == ("synthetic_ssl", ["1", "2", "10"], [])
    row = aggregate([variant]).row("synthetic_ssl", 0, FULL, "nme_io")  # 0.12, 0.14, 0.30
    assert row.n == 3 and row.mean == pytest.approx(0.56 / 3) and row.std == pytest.approx(0.0986577)


def test_chains_without_chain_json_group_by_folder_name_less_seed(tmp_path):
    for seed in (0, 1, 2):
        write_chain(tmp_path / "s", "curriculum", seed, chain_json=False)
    write_chain(tmp_path / "s", "nocurriculum", 0, chain_json=False)
    chains = find_chains(tmp_path / "s")
    assert all(c.config == {} and not c.has_chain_json for c in chains)
    assert chains[0].name == "s/seed=0,ssl=curriculum" and chains[0].seed == 0
    variants = group_by_seed(chains)
    assert [(v.label, v.seeds) for v in variants] == [
        ("ssl=curriculum", ["0", "1", "2"]),
        ("ssl=nocurriculum", ["0"]),
    ]
    summary = aggregate(variants)
    assert summary.row("ssl=curriculum", 0, FULL, "nme_io").mean == pytest.approx(0.12)


def test_an_unfinished_round_is_counted_and_noted(tmp_path):
    write_chain(tmp_path / "s", "nocurriculum", 0)
    write_chain(tmp_path / "s", "nocurriculum", 1, rounds=1)
    summary = aggregate(group_by_seed(find_chains(tmp_path / "s")))
    assert summary.row("ssl=nocurriculum", 1, FULL, "nme_io").n == 2
    row = summary.row("ssl=nocurriculum", 2, FULL, "nme_io")
    assert (row.n, row.std) == (1, None) and row.mean == pytest.approx(0.18)
    assert "ssl=nocurriculum: round 2: 1 of 2 seeds finished (seed 1 not yet)" in summary.warnings


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("rounds.json", '{"rounds": [', "cannot read it as JSON"),
        ("rounds.json", '{"rounds": {}}', 'expected {"chain": ..., "rounds": [...]}'),
        ("rounds.json", '{"rounds": [{"round": 0, "results": {"a": {"nme_io": "x"}}}]}', "is not a number"),
        ("chain.json", "{oops", "cannot read it as JSON"),
    ],
)
def test_an_unreadable_chain_file_is_named(tmp_path, name, text, message):
    folder = write_chain(tmp_path / "s", "curriculum", 0)
    (folder / name).write_text(text)
    with pytest.raises(AggregateError, match=re.escape(message)) as err:
        find_chains(tmp_path / "s")
    assert str(folder / name) in str(err.value)


def test_a_missing_folder_or_no_chains(tmp_path):
    with pytest.raises(AggregateError, match="does not exist"):
        find_chains(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert find_chains(tmp_path / "empty") == []
    with pytest.raises(AggregateError, match="no chains in"):
        summarize_chains(tmp_path / "empty", tmp_path / "out")


def test_report_cli_writes_seeds_md_next_to_report_md(tmp_path, capsys):
    base = tmp_path / "synthetic_ssl"
    for seed in (0, 1, 2):
        write_chain(base, "curriculum", seed, with_runs=True)
    for seed in (0, 1):
        write_chain(base, "nocurriculum", seed, with_runs=True)
    out = tmp_path / "report"
    assert report_main([str(base), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "[seeds.md](seeds.md)" in report and "5 self-training chains in 2 variants" in report
    assert "one seed is not evidence" in report
    md = (out / "seeds.md").read_text()
    assert "| 0 | std | 12.00 ± 2.00 (3) | 21.00 ± 1.41 (2) |" in md
    assert (out / "seeds.csv").is_file() and (out / "seeds.png").read_bytes()[:8] == PNG_MAGIC
    assert "12.00 ± 2.00 (3)" in printed and "seeds.md" in printed
    # --no-seeds: the runs' report alone
    out2 = tmp_path / "report2"
    assert report_main([str(base), "--out", str(out2), "--no-seeds"]) == 0
    assert (out2 / "report.md").is_file() and not (out2 / "seeds.md").exists()
    assert "seeds.md" not in (out2 / "report.md").read_text()


def test_report_cli_names_an_unreadable_rounds_json(tmp_path, capsys):
    folder = write_chain(tmp_path / "s", "curriculum", 0, with_runs=True)
    (folder / "rounds.json").write_text("{")
    assert report_main([str(tmp_path / "s"), "--out", str(tmp_path / "out")]) == 2
    assert f"{folder / 'rounds.json'}: cannot read it as JSON" in capsys.readouterr().err


def test_summarize_chains_logs_an_offline_wandb_run(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    save_dir = tmp_path / "wandb_dir"
    files = summarize_chains(
        [sweep], tmp_path / "out", wandb={"project": "pipnet-lit-test", "save_dir": save_dir}
    )
    assert files["md"].is_file() and "12.00 ± 2.00 (3)" in capsys.readouterr().out
    runs = list((save_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_log_seed_summary_to_wandb_closes_its_run(sweep, tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    summary = aggregate(group_by_seed(find_chains(sweep)))
    files = write_seed_summary(summary, tmp_path / "out")
    log_seed_summary_to_wandb(summary, files["png"], project="p", group="g", save_dir=tmp_path / "w")
    assert wandb.run is None
    assert len(list((tmp_path / "w" / "wandb").glob("offline-run-*"))) == 1
