"""`pipnet_lit.cli`: one options parser for the non-Hydra commands; the commands that use it (compare,
synthetic), their console scripts, the renamed modules' aliases and the shared presentation."""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from pipnet_lit import presentation
from pipnet_lit.cli import Command, HelpRequested, UsageError, option

REPO = Path(__file__).parents[1]


@dataclass
class Draw:
    points: bool = True
    radius: int = 0
    color: list[int] = field(default_factory=lambda: [0, 255, 0])


@dataclass(kw_only=True)
class Options:
    """Do one thing well."""

    ckpt: Path = option(help="a checkpoint")
    out: Path | None = option(None, help="where the files go")
    size: int = option(128, help="image side")
    threshold: float = option(0.1, help="NME fraction")
    smooth: bool = option(False, help="One Euro filter")
    progress: bool = option(True, help="progress bar")
    name: str = option("run", help="a name")
    scheme: str | None = option(None, help="a landmark scheme")
    format: Literal["png", "jpg"] = option("png", help="image format")
    tags: list[str] = option(["a"], help="tags")
    fraction: tuple[float, float] = option((0.4, 0.7), metavar="LOW HIGH", help="face fraction")
    crop: dict[str, float] | None = option(None, help="crop rule")
    detector_args: dict[str, Any] = option({}, help="detector arguments")
    draw: Draw = field(default_factory=lambda: Draw(radius=7))
    data: list[str] = option(passthrough=("data.", "+data."), help="data config overrides")


FLAGS = Command(Options, prog="tool", doc=Options.__doc__)
KEYS = Command(Options, prog="tool", doc=Options.__doc__, style="key=value")
KNOWN_FLAGS = (
    "--ckpt, --out, --size, --threshold, --smooth, --progress, --name, --scheme, --format, --tags, "
    "--fraction, --crop.KEY, --detector-args.KEY, --draw.points, --draw.radius, --draw.color, data.*, +data.*"
)
USAGE_FLAGS = "usage: tool --ckpt PATH [options]"


@dataclass(kw_only=True)
class Paths:
    paths: list[Path] = option(positional=True, metavar="PATH", help="run folders")
    out: Path | None = option(None, help="output folder")
    seeds: bool = option(True, help="seed aggregates")


PATHS = Command(Paths, prog="cmp")


def error_of(command: Command[Any], argv: list[str]) -> str:
    with pytest.raises(UsageError) as info:
        command.parse(argv)
    return str(info.value)


# -- values --------------------------------------------------------------------------------------------
def test_both_spellings_give_the_same_typed_values():
    expected = Options(ckpt=Path("m.ckpt"), out=Path("o"), size=64, threshold=0.25, name="x y")
    spellings = [
        ["ckpt=m.ckpt", "out=o", "size=64", "threshold=0.25", "name=x y"],
        ["--ckpt", "m.ckpt", "--out", "o", "--size", "64", "--threshold", "0.25", "--name", "x y"],
        ["--ckpt=m.ckpt", "--out=o", "--size=64", "--threshold=.25", "--name=x y"],
        ["ckpt=m.ckpt", "--out", "o", "size=64", "--threshold=0.25", "--name", "x y"],
    ]
    for argv in spellings:
        assert FLAGS.parse(argv) == expected
        assert KEYS.parse(argv) == expected
    parsed = FLAGS.parse(["--ckpt", "m.ckpt", "--size", "64"])
    assert isinstance(parsed.ckpt, Path) and type(parsed.size) is int and parsed.threshold == 0.1


def test_dashes_and_underscores_name_the_same_option():
    a = FLAGS.parse(["ckpt=c", "--detector-args.angles=[1]"])
    b = FLAGS.parse(["ckpt=c", "detector_args.angles=[1]"])
    assert a.detector_args == b.detector_args == {"angles": [1]}


def test_booleans():
    base = ["ckpt=c"]
    assert FLAGS.parse(base).smooth is False and FLAGS.parse(base).progress is True
    assert FLAGS.parse([*base, "--smooth"]).smooth is True
    assert FLAGS.parse([*base, "--no-progress"]).progress is False
    for text, value in (("true", True), ("False", False), ("yes", True), ("no", False), ("on", True),
                        ("off", False), ("1", True), ("0", False)):  # fmt: skip
        assert FLAGS.parse([*base, f"smooth={text}"]).smooth is value
        assert FLAGS.parse([*base, f"--smooth={text}"]).smooth is value
    # a flag takes no separate value: "true" after it is an argument, and this command takes none
    assert error_of(FLAGS, [*base, "--smooth", "true"]) == f"unexpected argument 'true'\n{USAGE_FLAGS}"
    assert error_of(FLAGS, [*base, "smooth=maybe"]) == (
        f"bad value for --smooth: 'maybe' is not a boolean (true / false)\n{USAGE_FLAGS}"
    )


def test_none_lists_tuples_choices_and_dicts():
    opts = FLAGS.parse(
        ["ckpt=c", "out=null", "scheme=None", "name=null", "--format", "jpg", "tags=x,y", "--tags", "z",
         "--fraction", "0.3", "0.6", "crop.scale_x=1.2", "crop.shift_y=-0.1",
         "detector_args.angles=[-20, 0,20]", "detector_args.min_score=0.95", "detector_args.kind=haar",
         "detector_args.flip=true", "detector_args.extra=null"]
    )  # fmt: skip
    assert opts.out is None and opts.scheme is None
    assert opts.name == "null"  # a plain str has no None
    assert opts.format == "jpg"
    assert opts.tags == ["x", "y", "z"]  # given: replaces the default ["a"]; repeated: appended
    assert opts.fraction == (0.3, 0.6)
    assert opts.crop == {"scale_x": 1.2, "shift_y": -0.1}
    assert opts.detector_args == {"angles": [-20, 0, 20], "min_score": 0.95, "kind": "haar", "flip": True,
                                  "extra": None}  # fmt: skip
    assert FLAGS.parse(["ckpt=c", "fraction=0.2,0.5"]).fraction == (0.2, 0.5)
    assert FLAGS.parse(["ckpt=c", "--fraction=[0.2, 0.5]"]).fraction == (0.2, 0.5)
    assert FLAGS.parse(["ckpt=c", "tags=[]"]).tags == [] and FLAGS.parse(["ckpt=c", "tags="]).tags == []
    assert (
        FLAGS.parse(["ckpt=c"]).tags == ["a"] and Options(ckpt=Path()).tags is not Options(ckpt=Path()).tags
    )


def test_nested_dataclass_fields_are_dotted_and_keep_the_parent_default():
    opts = FLAGS.parse(["ckpt=c", "--draw.color", "1,2,3", "--no-draw.points"])
    assert opts.draw == Draw(points=False, radius=7, color=[1, 2, 3])  # radius: the parent's default (7)
    assert FLAGS.parse(["ckpt=c", "draw.radius=3"]).draw == Draw(radius=3)
    assert FLAGS.parse(["ckpt=c"]).draw == Draw(radius=7)


def test_passthrough_overrides_are_collected_unparsed_in_order():
    opts = FLAGS.parse(["data.root=/x", "ckpt=c", "+data.extra=[1,2]", "--data.n", "3", "--data.k=a=b"])
    assert opts.data == ["data.root=/x", "+data.extra=[1,2]", "data.n=3", "data.k=a=b"]
    assert FLAGS.parse(["ckpt=c"]).data == []


def test_positionals_and_the_end_of_options():
    assert PATHS.parse(["a", "--out", "o", "b/c"]) == Paths(paths=[Path("a"), Path("b/c")], out=Path("o"))
    # a folder named by Hydra overrides is a path, not an option; an option is still an option
    parsed = PATHS.parse(["seed=0,ssl=x", "runs/lr=0.1", "out=o", "seeds=false"])
    assert parsed == Paths(paths=[Path("seed=0,ssl=x"), Path("runs/lr=0.1")], out=Path("o"), seeds=False)
    assert PATHS.parse(["a", "--", "-h", "--out", "x=1"]).paths == [
        Path(p) for p in ("a", "-h", "--out", "x=1")
    ]
    assert PATHS.parse(["-", "-1"]).paths == [Path("-"), Path("-1")]


def test_a_post_init_check_is_a_usage_error():
    @dataclass(kw_only=True)
    class Checked:
        n: int = option(1, help="a count")

        def __post_init__(self) -> None:
            if self.n < 1:
                raise ValueError(f"n must be >= 1, got {self.n}")

    assert error_of(Command(Checked, prog="p"), ["n=0"]) == "n must be >= 1, got 0\nusage: p [options]"


# -- errors --------------------------------------------------------------------------------------------
def test_error_messages_name_the_bad_key_or_value_then_the_usage_line():
    cases = {
        ("ckpt=c", "--ouut", "x"): f"unknown option '--ouut'; did you mean --out? (known: {KNOWN_FLAGS})",
        ("ckpt=c", "zzz=1"): f"unknown option 'zzz' (known: {KNOWN_FLAGS})",
        ("ckpt=c", "-x"): f"unknown option '-x' (known: {KNOWN_FLAGS})",
        (): "missing required argument: --ckpt PATH",
        ("ckpt=c", "--size", "big"): "bad value for --size: 'big' is not an integer",
        ("ckpt=c", "size=1.5"): "bad value for --size: '1.5' is not an integer",
        ("ckpt=c", "threshold=abc"): "bad value for --threshold: 'abc' is not a number",
        ("ckpt=c", "format=gif"): "bad value for --format: 'gif' is not one of png, jpg",
        ("ckpt=c", "--out"): "--out needs a value (PATH)",
        ("ckpt=c", "--out", "--smooth"): "--out needs a value (PATH)",
        ("ckpt=c", "fraction=1,2,3"): "bad value for --fraction: '1,2,3' has 3 values, expected 2 (LOW HIGH)",
        ("ckpt=c", "crop=1.2"): "--crop takes one entry at a time: --crop.KEY FLOAT",
        ("ckpt=c", "crop.scale=big"): "bad value for --crop.scale: 'big' is not a number",
        ("ckpt=c", "extra"): "unexpected argument 'extra'",
        ("ckpt=c", "a", "b"): "unexpected arguments 'a' 'b'",
    }
    for argv, message in cases.items():
        assert error_of(FLAGS, list(argv)) == f"{message}\n{USAGE_FLAGS}", argv
    assert isinstance(UsageError("m", "u"), ValueError)


def test_key_value_style_spells_messages_and_usage_its_way():
    usage = "usage: tool ckpt=PATH [key=value ...]"
    assert KEYS.usage() == usage
    assert error_of(KEYS, []) == f"missing required argument: ckpt=PATH\n{usage}"
    assert error_of(KEYS, ["ckpt=c", "threshhold=1"]).startswith(
        "unknown option 'threshhold'; did you mean threshold? (known: ckpt, out, size, threshold, smooth, "
    )
    # without positional arguments, an unknown name=value is an error in a flags command too
    assert error_of(FLAGS, ["ckpt=c", "seed=0,ssl=x"]).startswith("unknown option 'seed'")


def test_missing_positionals_and_several_missing_options():
    assert (
        error_of(PATHS, ["--out", "o"])
        == "missing required argument: PATH\nusage: cmp [options] PATH [PATH ...]"
    )

    @dataclass(kw_only=True)
    class Two:
        a: str = option(help="first")
        b: int = option(help="second")

    two = Command(Two, prog="two", style="key=value")
    assert error_of(two, []) == "missing required arguments: a=TEXT, b=INT\nusage: two a=TEXT b=INT"
    assert two.parse(["b=2", "a=x"]) == Two(a="x", b=2)


def test_parse_or_exit_exit_codes_and_streams(capsys):
    with pytest.raises(SystemExit) as info:
        FLAGS.parse_or_exit(["ckpt=c", "--size", "big"])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"tool: error: bad value for --size: 'big' is not an integer\n{USAGE_FLAGS}\n"
    assert FLAGS.parse_or_exit(["ckpt=c"]) == Options(ckpt=Path("c"))


def test_help_prints_the_docstring_and_every_option(capsys):
    with pytest.raises(HelpRequested) as info:
        FLAGS.parse(["--size", "oops", "-h"])  # help wins over errors
    assert info.value.text == FLAGS.help()
    with pytest.raises(SystemExit) as done:
        PATHS.parse_or_exit(["--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out == (
        "usage: cmp [options] PATH [PATH ...]\n"
        "\n"
        "positional arguments:\n"
        "  PATH [PATH ...]       run folders\n"
        "\n"
        "options:\n"
        "  --out PATH            output folder (default: null)\n"
        "  --seeds / --no-seeds  seed aggregates (default: true)\n"
        "  -h, --help            show this help and exit\n"
    )
    text = FLAGS.help()
    assert text.startswith("Do one thing well.\n\nusage: tool --ckpt PATH [options]\n\noptions:\n")
    for line in (
        "  --ckpt PATH",
        "a checkpoint (required)",
        "  --fraction LOW HIGH",
        "face fraction (default: 0.4,0.7)",
        "  --format {png,jpg}",
        "  --tags TEXT[,...]",
        "  --crop.KEY FLOAT",
        "  --draw.points / --no-draw.points",
        "  data.KEY=VALUE, +data.KEY=VALUE",
    ):
        assert line in text, line
    assert "  ckpt=PATH" in KEYS.help() and "  smooth=BOOL" in KEYS.help()


def test_bad_declarations_are_refused():
    with pytest.raises(TypeError, match="needs a dataclass"):
        Command(dict, prog="p")  # type: ignore[arg-type]

    @dataclass(kw_only=True)
    class ListFirst:
        many: list[str] = option(positional=True)
        one: str = option(positional=True)

    with pytest.raises(TypeError, match="only the last positional field may be a list"):
        Command(ListFirst, prog="p")
    with pytest.raises(ValueError, match="style must be"):
        Command(Paths, prog="p", style="--key")  # type: ignore[arg-type]


def test_cli_imports_only_the_standard_library():
    tree = ast.parse((REPO / "src/pipnet_lit/cli.py").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    top = {m.split(".")[0] for m in modules}
    assert top - set(sys.stdlib_module_names) - {"__future__"} == set()


# -- the commands that use it ---------------------------------------------------------------------------
def test_compare_reads_the_readme_command_lines(tmp_path):
    from pipnet_lit.compare import COMMAND, CompareOptions

    opts = COMMAND.parse(["outputs/multirun/2025", "--out", "cmp"])
    assert opts == CompareOptions(paths=[Path("outputs/multirun/2025")], out=Path("cmp"), threshold=0.1)
    opts = COMMAND.parse(["a", "b", "--threshold", "0.08", "--no-seeds"])
    assert opts == CompareOptions(paths=[Path("a"), Path("b")], threshold=0.08, seeds=False)
    assert COMMAND.parse(["seed=0,ssl=curriculum"]).paths == [Path("seed=0,ssl=curriculum")]
    assert error_of(COMMAND, ["--threshold", "x", "a"]) == (
        "bad value for --threshold: 'x' is not a number\n"
        "usage: python -m pipnet_lit.compare [options] PATH [PATH ...]"
    )


def test_compare_main_exits_2_on_a_bad_command_line(capsys):
    from pipnet_lit.compare import main

    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(
        "python -m pipnet_lit.compare: error: missing required argument: PATH\n"
    )


def test_synthetic_reads_its_old_command_lines():
    from pipnet_lit.synthetic.__main__ import COMMAND, SynthOptions

    argv = [
        "--out",
        "data/synthetic",
        "--n-train",
        "2000",
        "--n-common",
        "300",
        "--size",
        "192",
        "--seed",
        "0",
    ]
    assert COMMAND.parse(argv) == SynthOptions(out=Path("data/synthetic"), size=192)
    opts = COMMAND.parse(["--out", "o", "--face-fraction", "0.3", "0.6", "--format", "jpg", "--force",
                          "--no-progress", "--n-wild-test", "5"])  # fmt: skip
    assert opts == SynthOptions(
        out=Path("o"), face_fraction=(0.3, 0.6), format="jpg", force=True, progress=False, n_wild_test=5
    )
    assert error_of(COMMAND, ["--out", "o", "--format", "gif"]) == (
        "bad value for --format: 'gif' is not one of png, jpg\n"
        "usage: python -m pipnet_lit.synthetic --out PATH [options]"
    )


def test_the_old_report_command_still_runs_compare(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipnet_lit.report", str(tmp_path / "nothing")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"python -m pipnet_lit.compare: error: {tmp_path / 'nothing'} does not exist"
    )


def test_aliases_re_export_the_moved_names():
    import pipnet_lit.compare as compare
    import pipnet_lit.report as report
    import pipnet_lit.reporting as reporting
    import pipnet_lit.run_results as run_results

    for name in report.__all__:
        assert getattr(report, name) is getattr(compare, name), name
    assert reporting.format_metric is presentation.format_metric
    assert reporting.markdown_table is presentation.markdown_table
    assert reporting.write_per_image_results is run_results.write_per_image_results
    assert reporting.report is run_results.report
    assert "deprecated alias" in report.__doc__.lower() and "deprecated alias" in reporting.__doc__.lower()


# -- console scripts -----------------------------------------------------------------------------------
#: Every command that is not a Hydra job, and the module a console script must point into.
NON_HYDRA_COMMANDS = {
    "predict": "pipnet_lit.predict",
    "convert": "pipnet_lit.convert",
    "export": "pipnet_lit.export",
    "compare": "pipnet_lit.compare",
    "synthetic": "pipnet_lit.synthetic",
}


def _scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_non_hydra_command_has_a_console_script():
    scripts = _scripts()
    targets = [t.split(":")[0] for t in scripts.values()]
    for command, module in NON_HYDRA_COMMANDS.items():
        assert any(t == module or t.startswith(module + ".") for t in targets), command
    assert scripts["pipnet-compare"] == "pipnet_lit.compare:main"
    assert scripts["pipnet-synth"] == "pipnet_lit.synthetic.__main__:main"
    assert {"pipnet-train", "pipnet-eval", "pipnet-predict", "pipnet-convert", "pipnet-export"} <= set(
        scripts
    )


@pytest.mark.parametrize("script", sorted(_scripts()))
def test_console_script_targets_are_callable(script):
    module_name, _, attr = _scripts()[script].partition(":")
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{module_name} does not exist yet (the export restructuring creates it)")
    assert callable(getattr(importlib.import_module(module_name), attr))


# -- presentation and files shared by the commands ------------------------------------------------------
def test_metric_cells():
    assert presentation.format_metric("nme_io", 0.031234) == "3.12"
    assert presentation.format_metric("fr@0.10", 0.0) == "0.00"
    assert presentation.format_metric("auc@0.10", 0.612345) == "0.6123"
    assert presentation.format_metric("pl_spearman", -0.5) == "-0.5000"
    assert presentation.format_metric("nme_io", None) == "-"
    assert presentation.format_metric("auc@0.10", float("nan")) == "nan"
    assert presentation.percent_cell(0.12345) == "12.35" and presentation.percent_cell(None) == "-"
    assert presentation.correlation_cell(0.8125) == "+0.812" and presentation.correlation_cell(None) == "-"
    assert presentation.metric_header("nme_io") == "nme_io (%)"
    assert presentation.metric_header("auc@0.10") == "auc@0.10"
    assert presentation.markdown_table(["a", "b"], [["x|y", "1"]]) == "| a | b |\n|---|---|\n| x\\|y | 1 |"


def test_the_two_ced_looks_keep_their_legends_and_axes(tmp_path):
    from pipnet_lit.callbacks import plot_ced as run_ced
    from pipnet_lit.compare import plot_ced as compare_ced
    from pipnet_lit.metrics.functional import ced_curve, fr_auc

    nmes = np.array([0.01, 0.02, 0.05, 0.2])
    fr, auc = fr_auc(nmes, 0.1)
    assert presentation.ced_legend("r18", fr, auc) == f"r18 (AUC {auc:.4f}, FR {100 * fr:.2f}%)"
    assert (
        presentation.ced_legend("nme_io", 0.25, 0.5, presentation.RUN_CED) == "nme_io: AUC 0.5000, FR 25.00%"
    )
    assert presentation.ced_legend("nme_io", None, 0.5, presentation.RUN_CED) == "nme_io"

    path = compare_ced(
        [("r18", nmes), ("r101", nmes / 2)], tmp_path / "c.png", "CED, s", "NME, nme_io (%)", 0.1
    )
    assert path.read_bytes()[:4] == b"\x89PNG"
    fig = presentation.plot_ced(
        [presentation.ced_curve_of("r18", nmes, 0.1)], title="CED, s", xlabel="NME (%)", xmax=0.1
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"r18 (AUC {auc:.4f}, FR {100 * fr:.2f}%)"]
    assert ax.get_xlim() == (0.0, 10.0) and ax.get_ylim() == (0.0, 1.0)
    assert tuple(fig.get_size_inches()) == (6.4, 4.8)
    xs, ys = ced_curve(nmes, 0.1, 0.01)
    run = run_ced(xs.numpy(), ys.numpy(), "CED", "nme_io", fr=0.25, auc=0.5)
    assert tuple(run.get_size_inches()) == (5.0, 4.0) and run.axes[0].get_xlabel() == "nme_io (%)"
    assert run.axes[0].lines[0].get_color() == "#007aff"


def test_one_file_sha256(tmp_path):
    from pipnet_lit.files import file_sha256
    from pipnet_lit.ssl.pseudo_labels import file_sha256 as old_name

    path = tmp_path / "blob"
    path.write_bytes(b"pipnet" * 1000)
    assert file_sha256(path) == file_sha256(path, chunk=7) == hashlib.sha256(b"pipnet" * 1000).hexdigest()
    assert old_name is file_sha256
