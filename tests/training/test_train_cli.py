"""`python -m training COMMAND`: every command has --help, defaults and a YAML --config, and runs
with a typed settings object that the recipe can build and print as the same command."""
import subprocess
import sys

import pytest

from training.cli import COMMANDS, PARSERS, main, parse_settings
from training.errors import SettingsError
from training.settings import GrpoSettings, parse_namespace, to_argv


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_module_entry_point_lists_commands():
    r = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for cmd in COMMANDS:
        assert cmd in r.stdout


def test_grpo_defaults_are_the_papers():
    a = GrpoSettings()
    assert (a.num_generations, a.temperature, a.beta, a.epsilon, a.lr, a.warmup) == (4, 1.0, 0.01, 0.2, 1e-5, 0.1)
    assert (a.prompts_per_step, a.max_completion_length, a.lora_r, a.lora_alpha, a.lora_dropout) == (8, 96, 64, 128, 0.05)
    assert (a.w_format, a.w_answer, a.w_ground, a.grounding) == (1.0, 1.0, 1.0, "strict")


def test_config_file_sets_defaults_and_flags_win(tmp_path):
    cfg = tmp_path / "g.yaml"
    cfg.write_text("beta: 0.05\nnum-generations: 8\ngrounding: paper\n")
    a = parse_settings("grpo", ["--config", str(cfg), "--beta", "0.02", "--model", "m", "--data", "d", "--out", "o"])
    assert isinstance(a, GrpoSettings)
    assert (a.beta, a.num_generations, a.grounding) == (0.02, 8, "paper")


def test_config_file_with_unknown_option_fails_clearly(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("betta: 0.05\n")
    with pytest.raises(SettingsError, match="unknown option"):
        parse_namespace(PARSERS["grpo"](), ["--config", str(cfg)])


def test_missing_required_option_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["grpo", "--data", "x"])
    assert e.value.code == 2
    assert "--model" in capsys.readouterr().err


def test_shipped_configs_parse():
    from pathlib import Path

    cfgs = Path(__file__).resolve().parents[2] / "training" / "configs"
    for name, cmd in [("grpo_irgbench_7b.yaml", "grpo"), ("grpo_tiny.yaml", "grpo"),
                      ("sft_coarse_irgbench_3b.yaml", "sft-coarse"), ("sft_coarse_tiny.yaml", "sft-coarse"),
                      ("sft_response_tiny.yaml", "sft-response"), ("synth_tiny.yaml", "synth")]:
        parse_namespace(PARSERS[cmd](), ["--config", str(cfgs / name)])


def test_training_imports_only_the_model_layer():
    code = ("import sys, importlib, pkgutil, training, training.data\n"
            "for pkg in (training, training.data):\n"
            "    for i in pkgutil.iter_modules(pkg.__path__):\n"
            "        if i.name != '__main__':\n"
            "            importlib.import_module(pkg.__name__ + '.' + i.name)\n"
            "bad = [k for k in sys.modules if k.split('.')[0] in ('rclpy', 'torchvision', 'trl')\n"
            "       or k.startswith(('earl_ros.ros', 'earl_ros.cli', 'earl_ros.export'))]\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=repo)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c not in ("recipe", "plot")])  # the settings-table commands
def test_settings_defaults_are_the_cli_defaults(cmd):
    """The dataclass a library caller builds and the one the CLI parses from no flags are the same."""
    import dataclasses

    from training.commands import COMMANDS as TABLE

    parsed = vars(PARSERS[cmd]().parse_args([]))
    parsed.pop("config")
    assert dataclasses.asdict(TABLE[cmd].settings()) == parsed


def test_settings_print_as_the_command_that_rebuilds_them():
    """What the recipe prints (and runs in its parallel lanes) parses back to the same settings."""
    s = GrpoSettings(model="m", data="d", out="o", num_generations=2, beta=0.0, no_descriptor=True, seed=3,
                     lr=2e-4, afs_alpha=0.5)
    argv = to_argv(s)
    assert argv[:6] == ["--model", "m", "--data", "d", "--out", "o"] and "--no-descriptor" in argv
    assert "--lr-schedule" not in argv  # defaults are left out
    assert parse_settings("grpo", argv) == s
    from training.settings import SftResponseSettings

    r = SftResponseSettings(model="m", data="d", out="o", vision_cache=False, epochs=0.2)
    assert "--no-vision-cache" in to_argv(r) and parse_settings("sft-response", to_argv(r)) == r
    from training.settings import DescriptorsSettings

    d = DescriptorsSettings(model="m", data="d", out="o", split=["train", "val"])
    assert to_argv(d)[-3:] == ["--split", "train", "val"] and parse_settings("descriptors", to_argv(d)) == d


def test_library_errors_become_one_error_line_and_exit_code_2(tmp_path, capsys, monkeypatch):
    argv = ["export", "--model", str(tmp_path / "not-a-model"), "--out", str(tmp_path / "x")]
    monkeypatch.delenv("EARL_DEBUG", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m training export: error: ") and "not-a-model" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    assert main(["synth", "--config", str(bad), "--out", str(tmp_path / "s")]) == 2
    assert "must be a YAML mapping" in capsys.readouterr().err
    monkeypatch.setenv("EARL_DEBUG", "1")  # the traceback, for a developer, before the same line
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("python -m training export: error: ")
