"""`dlcli report` on odd folders, the summary table's values, and what the pictures show."""

import csv
import json

import pytest

from conftest import FAST_TOY, assert_one_line_error
from dlcli import plots
from dlcli.sweeps import Job, compact, heatmap_grid, print_table, varying_parameters, write_report

ROWS = [{"epoch": 1, "train_loss": 1.0, "val_acc": 0.5}, {"epoch": 2, "train_loss": 0.8, "val_acc": 0.6}]


def fake_run(folder, overrides, summary=None, metrics=ROWS):
    """A run folder as dlcli train leaves it, without training."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    summary = {"status": "ok", "best_val_acc": 0.6, "test_acc": 0.55, "epochs": 2} if summary is None else summary
    (folder / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    return folder


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures drawn during a test, after layout, as they were saved."""
    drawn = []
    render = plots._png
    monkeypatch.setattr(plots, "_png", lambda fig: drawn.append(fig) or render(fig))
    return drawn


@pytest.mark.parametrize(
    ("file", "content", "reason"),
    [
        ("summary.json", "{bad", "not valid JSON"),
        ("summary.json", "[1, 2]", "not a JSON object"),
        ("summary.json", '{"status": "ok", "best_val_acc": "high"}', "best_val_acc is not a number"),
        ("metrics.jsonl", '{"epoch": 1}\n', "line 1 has no number train_loss"),
        ("metrics.jsonl", '{"epoch": 1, "train_loss": 1.0, "val_acc": 0.5}\n{bad\n', "line 2 is not valid JSON"),
        ("metrics.jsonl", b"\xff\xfe", "utf-8"),
        (".hydra/overrides.yaml", ": :", "not valid YAML"),
    ],
)
def test_an_unreadable_run_file_is_one_line_naming_it_and_nothing_is_written(dlcli, tmp_path, file, content, reason):
    fake_run(tmp_path / "sweep" / "0", ["optimizer.lr=0.1"])
    bad = fake_run(tmp_path / "sweep" / "1", ["optimizer.lr=0.01"]) / file
    bad.write_bytes(content) if isinstance(content, bytes) else bad.write_text(content)
    proc = dlcli("report", "sweep", "--out", "rep")
    assert_one_line_error(proc, str(bad.relative_to(tmp_path)), reason)
    assert not (tmp_path / "rep").exists()


def test_runs_with_different_override_keys_share_one_csv_with_blank_cells(tmp_path):
    jobs = [
        Job("0", "optimizer.lr=0.0010000000000000002 model.width=32", "ok", best_val_acc=0.6),
        Job("1", "optimizer.lr=0.01 model.width=32", "ok", best_val_acc=0.5),
        Job("single", "model.width=16", "ok", best_val_acc=0.4),
    ]
    assert varying_parameters(jobs) == {"optimizer.lr": [0.0010000000000000002, 0.01], "model.width": [16.0, 32.0]}
    assert heatmap_grid(jobs, "best_val_acc") is None  # two of the four cells have no job
    written = write_report(jobs, tmp_path, "best_val_acc")
    with open(written["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [(r["optimizer.lr"], r["model.width"]) for r in rows] == [
        ("0.0010000000000000002", "32"),
        ("0.01", "32"),
        ("", "16"),
    ]  # exact text, blank where unset


def test_a_grid_keeps_its_heatmap_beside_a_run_without_overrides():
    grid = [
        Job(str(i), f"lr={lr} wd={wd}", "ok", best_val_acc=0.5 + i / 10)
        for i, (lr, wd) in enumerate([(0.1, 0), (0.1, 1e-4), (0.01, 0), (0.01, 1e-4)])
    ]
    (x_name, xs), (y_name, ys), cells = heatmap_grid(
        [*grid, Job("single", "", "ok", best_val_acc=0.99)], "best_val_acc"
    )
    assert (y_name, ys, x_name, xs) == ("lr", [0.01, 0.1], "wd", [0.0, 1e-4])
    assert cells == [[0.7, 0.8], [0.5, 0.6]]


def test_true_and_false_match_in_any_case():
    jobs = [Job("0", "trainer.progress=False lr=0.1", "ok"), Job("1", "trainer.progress=false lr=0.2", "ok")]
    assert list(varying_parameters(jobs)) == ["lr"]


def test_the_table_shows_four_significant_digits_and_blanks(capsys):
    compacted = {
        "0.0010000000000000002": "0.001",
        "0.004430375245218269": "0.00443",
        "1e-4": "0.0001",
        "32": "32",
        "lenet": "lenet",
        "[6,16]": "[6,16]",
    }
    assert {text: compact(text) for text in compacted} == compacted
    print_table(
        [
            Job("0", "optimizer.lr=0.0010000000000000002 model.channels=[6,16]", "ok", best_val_acc=0.9),
            Job("1", "model.width=16", "ok", best_val_acc=0.8),
        ],
        "best_val_acc",
        "title",
    )
    out = capsys.readouterr().out
    assert "0.001 " in out and "0.0010000000000000002" not in out and "[6,16]" in out
    assert "optimizer.lr" in out and "model.width" in out  # a column per key that differs


@pytest.mark.slow
def test_matplotlib_stays_quiet_when_hydra_logs_at_debug(dlcli):
    proc = dlcli("train", "hydra.verbose=true", *FAST_TOY)  # draws learning_curves.png
    assert proc.returncode == 0, proc.stderr
    assert "findfont" not in proc.stdout + proc.stderr


def test_heatmap_colour_bar_is_titled_in_words(figures):
    plots.heatmap("wd", [0.0, 1e-4], "lr", [0.01, 0.1], [[0.5, 0.6], [0.7, None]], "best_val_acc")
    image_ax, bar_ax = figures[0].axes
    assert bar_ax.get_ylabel() == "best val accuracy (%)"
    assert "best_val_acc" not in image_ax.get_title()


def test_thirty_jobs_get_thirty_different_line_styles_and_a_legend(figures):
    plots.sweep_curves([(f"seed={i}", ROWS) for i in range(30)])
    ax = figures[0].axes[0]
    assert len({(line.get_color(), line.get_linestyle(), line.get_marker()) for line in ax.get_lines()}) == 30
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"seed={i}" for i in range(30)]


@pytest.mark.parametrize(("classes", "rotation"), [(["0", "1", "2"], 0), (["airplane", "automobile", "bird"], 45)])
def test_confusion_matrix_colour_bar_matches_the_matrix_and_only_long_names_slant(tmp_path, figures, classes, rotation):
    plots.confusion_matrix([[5, 1, 0], [2, 7, 1], [0, 0, 9]], classes, tmp_path / "cm.png", "title")
    matrix, bar = (ax.get_position() for ax in figures[0].axes)
    assert (bar.y0, bar.height) == pytest.approx((matrix.y0, matrix.height), abs=1e-3)
    assert {label.get_rotation() for label in figures[0].axes[0].get_xticklabels()} == {rotation}


def test_decision_boundary_has_a_legend_of_class_colours(tmp_path, figures):
    import torch
    from matplotlib import colormaps

    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    plots.decision_boundary(
        lambda grid: grid[:, 0].round().long().clamp(0, 2),
        x,
        torch.tensor([0, 1, 2]),
        tmp_path / "db.png",
        "title",
        steps=20,
        classes=["inner", "middle", "outer"],
    )
    legend = figures[0].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["inner", "middle", "outer"]
    assert [h.get_color() for h in legend.legend_handles] == [colormaps["tab10"](i) for i in range(3)]


def test_report_into_a_file_is_refused_in_one_line(dlcli, tmp_path):
    fake_run(tmp_path / "run", [])
    (tmp_path / "taken").write_text("mine")
    assert_one_line_error(dlcli("report", "run", "--out", "taken"), "--out taken is a file")
    assert (tmp_path / "taken").read_text() == "mine"
