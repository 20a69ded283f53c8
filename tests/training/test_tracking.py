"""Training you can watch: TensorBoard events that say what log.jsonl says, curves drawn from the logs,
progress bars that keep out of CI logs, and images the model card can show."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _events(tb_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _logged(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_grpo_run_writes_tensorboard_events_with_the_values_of_its_log(cli, grpo_argv, tmp_path):
    from training.tracking import scalars

    out = tmp_path / "R"
    cli(*grpo_argv(out, "--report-to", "tensorboard"))
    events = _events(out / "tb")
    records = _logged(out / "log.jsonl")
    assert len(records) == 2
    for rec in records:
        values = scalars(rec)
        assert {"reward/total", "reward/format", "kl", "loss", "lr", "completion_len", "parse_ok"} <= set(values)
        for key, value in values.items():
            assert events[key][rec["step"]] == pytest.approx(value, rel=1e-6, abs=1e-12), key


def test_report_to_none_writes_no_events(cli, grpo_argv, tmp_path):
    out = tmp_path / "R"
    cli(*grpo_argv(out, "--report-to", "none"))
    assert (out / "log.jsonl").exists() and not (out / "tb").exists()


def test_auto_reports_to_tensorboard_only_where_it_is_installed(monkeypatch, tmp_path):
    from training import tracking

    assert tracking.tensorboard_dir(tmp_path, "auto") == tmp_path / "tb"
    monkeypatch.setattr(tracking, "tensorboard_available", lambda: False)
    assert tracking.tensorboard_dir(tmp_path, "auto") is None
    with pytest.raises(ImportError, match="pip install"):
        tracking.TensorBoardMirror(tmp_path / "tb")


def test_nested_values_become_slash_named_scalars_and_bookkeeping_is_left_out():
    from training.tracking import scalars

    rec = {"time": 1.0, "step": 3, "steps": 9, "stage": "x", "ok": True, "loss": 0.5, "nan": float("nan"),
           "val_after": {"class_acc": 0.75, "name": "probe"}}
    assert scalars(rec) == {"loss": 0.5, "val_after/class_acc": 0.75}


def _grpo_like_log(path: Path, steps: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for s in range(1, steps + 1):
            f.write(json.dumps({"step": s, "reward/total": 1 + s / steps, "reward/format": 0.5, "reward/answer": 0.3,
                                "reward/ground": s / (2 * steps), "kl": 1e-3 * s, "loss": 0.1, "lr": 1e-4,
                                "completion_len": 40.0, "parse_ok": 1.0}) + "\n")
        f.write('{"step": 31, "loss": 0.1')  # a line cut off by a killed run


def test_plot_draws_a_laptop_sized_png_from_a_run_dir(tmp_path, capsys):
    from PIL import Image

    from training.cli import main

    _grpo_like_log(tmp_path / "run" / "grpo" / "log.jsonl")
    (tmp_path / "run" / "grpo" / "val_log.jsonl").write_text(
        "".join(json.dumps({"step": s, "val/cIoU": 0.5 + s / 100}) + "\n" for s in (0, 15, 30)))
    png = tmp_path / "curves.png"
    assert main(["plot", str(tmp_path / "run"), "--out", str(png)]) == 0
    assert capsys.readouterr().out.strip() == str(png)
    with Image.open(png) as im:
        assert im.size == (1300, 800)


def test_plot_overlays_several_runs_and_defaults_to_the_first_runs_dir(tmp_path):
    from training.plot import main, find_logs

    _grpo_like_log(tmp_path / "a" / "log.jsonl")
    _grpo_like_log(tmp_path / "b" / "log.jsonl", steps=10)
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "curves.png").stat().st_size > 10_000
    assert find_logs(tmp_path / "a") == [tmp_path / "a" / "log.jsonl"]


def test_plot_of_a_dir_without_logs_is_a_one_line_error(tmp_path, capsys):
    from training.cli import main

    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m training plot: error: no training log")


def test_progress_bars_are_off_with_quiet_and_in_ci(monkeypatch):
    from training.progress import bars_enabled, progress

    monkeypatch.delenv("CI", raising=False)
    assert bars_enabled() and not bars_enabled(quiet=True)
    monkeypatch.setenv("CI", "true")
    assert not bars_enabled()
    assert progress(range(3), desc="x").disable


def _image_links(markdown: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown.read_text())


@pytest.mark.parametrize("doc", ["models/earl-tiny-synth/MODEL_CARD.md", "README.md", "docs/training.md"])
def test_every_image_the_card_and_readme_show_exists(doc):
    path = ROOT / doc
    links = [link for link in _image_links(path) if not link.startswith("http")]
    missing = [link for link in links if not (path.parent / link).is_file()]
    assert not missing, f"{doc} links images that are not in the repository: {missing}"


def test_the_card_draws_only_the_curves_its_run_logged(tmp_path):
    from PIL import Image

    from training.report.curves import curves_section, draw_training_curves

    run, model_out = tmp_path / "run", tmp_path / "model"
    _grpo_like_log(run / "grpo" / "log.jsonl")
    (run / "sft").mkdir(parents=True)  # a stage dir without a log draws nothing
    drawn = draw_training_curves(run, model_out)
    assert [name for name, _ in drawn] == ["training_curves_grpo.png"]
    with Image.open(model_out / "training_curves_grpo.png") as im:
        assert im.size == (1300, 800)
    section = curves_section(drawn)
    assert "(training_curves_grpo.png)" in section and "training_curves_sft.png" not in section
    assert curves_section([]) == ""


def test_the_val_curve_finds_each_saved_checkpoint_in_step_order(tmp_path):
    from training.val_curve import checkpoint_steps

    for name in ("checkpoint-100", "checkpoint-50", "checkpoint-x", "final"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "earl.yaml").write_text("name: x\n")
    (tmp_path / "checkpoint-150").mkdir()  # interrupted while saving: no manifest
    assert checkpoint_steps(tmp_path) == {50: tmp_path / "checkpoint-50", 100: tmp_path / "checkpoint-100"}


def test_a_bar_switched_off_by_its_caller_stays_off_whatever_quiet_says(monkeypatch):
    from training.progress import progress

    monkeypatch.delenv("CI", raising=False)
    assert progress(total=3, desc="x", quiet=True, disable=True).disable
    assert progress(total=3, desc="x", quiet=False, disable=True).disable
    assert not progress(total=3, desc="x", quiet=False, disable=False).disable
