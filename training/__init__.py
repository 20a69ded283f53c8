"""EARL training: synthetic data + Ego-IRGBench loader, stage-1 SFT and descriptors, response SFT,
GRPO with R_f/R_a/R_g, evaluation metrics. `python -m training --help`. Imports only earl_ros.model."""
