"""A model-free stand-in with EarlPipeline's interface, for in-process plumbing tests."""
from __future__ import annotations

import time

import numpy as np

from earl_ros.model.types import Grounding, Interaction


class FakePipeline:
    model_id = "fake"
    descriptor_dim = 8

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.describe_calls = 0

    def describe(self, frame, stamp=None, background=False, progress=None):
        self.describe_calls += 1
        time.sleep(self.delay_s)
        return Interaction(text=f"hands at {frame.shape[1]}x{frame.shape[0]}",
                           descriptor=np.ones(self.descriptor_dim, np.float32), stamp=stamp, latency_ms=1.0)

    def answer(self, frame, query, interaction=None, stamp=None, progress=None):
        if progress is not None:
            progress.stage("answering")
        time.sleep(self.delay_s)
        h, w = frame.shape[:2]
        masks = np.zeros((1, h, w), bool)
        masks[0, : h // 2, : w // 2] = True
        return Grounding(entities=["cup"], boxes=np.array([[0, 0, w // 2, h // 2]]), masks=masks,
                         scores=[0.9], answer="The left hand is holding the cup.", no_target=False,
                         description=interaction.text if interaction else "",
                         timings_ms={"respond": 1.0, "segment": 1.0}, image_size=(h, w))
