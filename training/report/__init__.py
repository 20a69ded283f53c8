"""`python -m training recipe tiny-synth-eval`: held-out evaluation, ablation table and model card.

After `python -m training recipe tiny-synth` (and its `--ablation no-descriptor` arm), this:
  1. writes held-out synthetic splits that share nothing with training: `test` (default style,
     seed 1) and `test_dark` (style dark = out of distribution, seed 2) under RUN/heldout (cache.py);
  2. runs `python -m training eval` (training.evaluate.evaluate: the full inference pipeline, the
     fine-tuned segmenter makes the masks) on them for the exported model and on `test` for the
     ablation arms (SFT only; no descriptor SFT+GRPO and SFT only, evaluated with --no-descriptor);
  3. measures the query latency (response generate + segmenter) of the exported model, the
     segmenter's ceiling given ground-truth boxes (`segmenter-eval`) and how much the coarse model
     looks at the image (`image_reliance`) and what its descriptions name (`held_objects`)
     (diagnostics.py);
  4. writes RUN/eval/quality.json and MODEL_OUT/MODEL_CARD.md (card.py, findings.py, statistics.py).
Each result is cached in RUN/eval/ with the fingerprint of the weights it was measured on
(`model_fingerprint`): a stage retrained into the same directory is evaluated again, an unchanged
one is not (delete a file to force it). The run itself is run.py; `python -m training.report CHECK`
runs one diagnostic alone.

The names below are the package's interface (the recipe, the tests and the CLI import them from
here), so callers need not know which module holds what.
"""
from training.report.answers import box_fit, left_edge_zero, query_kinds
from training.report.cache import HELDOUT, _seed_cache, cached_json, eval_cached, heldout_data, repeat_seeds
from training.report.card import _afs_training, ablation_run_line, model_card
from training.report.diagnostics import (afs_size, held_object_pattern, held_objects, image_reliance,
                                         measure_latency, segmenter_oracle)
from training.report.findings import _afs_by_kind, _descriptor_content, _grpo_vs_sft, grpo_trend
from training.report.loaded_model import LoadedModel, model_fingerprint
from training.report.run import main, run_report
from training.report.statistics import (MET, METRICS, NOT_MEASURED, NOT_MET, POINT_ONLY, SEEDS_DISAGREE, _beats,
                                        _repeats_section, _targets_summary, _versus, table)

__all__ = [
    "HELDOUT", "MET", "METRICS", "NOT_MEASURED", "NOT_MET", "POINT_ONLY", "SEEDS_DISAGREE", "LoadedModel",
    "_afs_by_kind", "_afs_training", "_beats", "_descriptor_content", "_grpo_vs_sft", "_repeats_section",
    "_seed_cache", "_targets_summary", "_versus", "ablation_run_line", "afs_size", "box_fit", "cached_json",
    "eval_cached", "grpo_trend", "held_object_pattern", "held_objects", "heldout_data", "image_reliance",
    "left_edge_zero", "main", "measure_latency", "model_card", "model_fingerprint", "query_kinds", "repeat_seeds",
    "run_report", "segmenter_oracle", "table",
]
