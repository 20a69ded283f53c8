"""Data: the Ego-IRGBench loader and the synthetic generator that writes the same layout."""
from training.data.irgbench import IRGBench, Sample, entities_of, load_label_map, load_rgb, masks_to_boxes  # noqa: F401
