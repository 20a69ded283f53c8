"""The run-dir layout the recipe writes and the report reads (training/layout.py)."""
from pathlib import Path

from training.layout import RunLayout


def test_stage_dirs_and_seed_repeats(tmp_path):
    L = RunLayout(tmp_path)
    assert L.grpo_final == tmp_path / "grpo" / "final" and L.grpo_nodesc_final == tmp_path / "grpo_nodesc" / "final"
    assert L.sft_nodesc == tmp_path / "sft_nodesc" and L.descriptors == tmp_path / "coarse" / "descriptors.safetensors"
    assert L.response_stages() == {"sft": L.sft, "grpo": L.grpo_final, "nodesc_grpo": L.grpo_nodesc_final,
                                   "nodesc_sft": L.sft_nodesc}
    assert L.seed(2).grpo_final == tmp_path / "seed2" / "grpo" / "final"
    assert L.recipe_state() == tmp_path / "recipe.json"
    assert L.recipe_state(ablation="no-descriptor") == tmp_path / "recipe_no-descriptor.json"
    assert L.recipe_state(repeat_seed=3) == tmp_path / "recipe_seed3.json"
    for d in ("seed3", "seed1", "seedx"):
        (tmp_path / d).mkdir()
    assert L.repeat_seeds() == [1, 3]
    assert RunLayout(str(tmp_path)).root == Path(tmp_path)
