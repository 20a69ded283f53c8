"""`python -m training COMMAND`: every command has --help, defaults and a YAML --config."""
import subprocess
import sys

import pytest

from training.cli import COMMANDS, PARSERS, main
from training.common import parse_with_config


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
    a = PARSERS["grpo"]().parse_args([])
    assert (a.num_generations, a.temperature, a.beta, a.epsilon, a.lr, a.warmup) == (4, 1.0, 0.01, 0.2, 1e-5, 0.1)
    assert (a.prompts_per_step, a.max_completion_length, a.lora_r, a.lora_alpha, a.lora_dropout) == (8, 96, 64, 128, 0.05)
    assert (a.w_format, a.w_answer, a.w_ground, a.grounding) == (1.0, 1.0, 1.0, "strict")


def test_config_file_sets_defaults_and_flags_win(tmp_path):
    cfg = tmp_path / "g.yaml"
    cfg.write_text("beta: 0.05\nnum-generations: 8\ngrounding: paper\n")
    a = parse_with_config(PARSERS["grpo"](), ["--config", str(cfg), "--beta", "0.02"])
    assert (a.beta, a.num_generations, a.grounding) == (0.02, 8, "paper")


def test_config_file_with_unknown_option_fails_clearly(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("betta: 0.05\n")
    with pytest.raises(SystemExit, match="unknown option"):
        parse_with_config(PARSERS["grpo"](), ["--config", str(cfg)])


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
        parse_with_config(PARSERS[cmd](), ["--config", str(cfgs / name)])


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
