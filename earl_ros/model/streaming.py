"""One query's progress while it runs: the stage it is in, its answer text as generated, its cancel.

The `ask` action streams this to the robot (feedback) and cancels through it; the model layer only
reports and checks, so it stays ROS-free. Cancelling stops generation at the next token (a
StoppingCriteria) and the answer then ends with CancelledError instead of a parse of half a text.
"""
from __future__ import annotations

import threading
from typing import Callable

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from .errors import CancelledError

STAGES = ("queued", "describing", "answering", "segmenting")


class AnswerProgress:
    """Stages and text of one answer, reported through callbacks that must not block for long
    (they run on the generating thread, between tokens)."""

    def __init__(self, on_stage: Callable[[str], None] | None = None,
                 on_text: Callable[[str, int], None] | None = None):
        self._on_stage = on_stage or (lambda stage: None)
        self._on_text = on_text or (lambda text, tokens: None)
        self._cancelled = threading.Event()
        self.stage_name = ""
        self.text, self.tokens = "", 0

    # ---- the caller's side
    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # ---- the model's side
    def check(self) -> None:
        if self.cancelled:
            raise CancelledError(f"cancelled while {self.stage_name or 'queued'}")

    def stage(self, name: str) -> None:
        """Entering stage `name` (one of STAGES); a cancelled answer stops here."""
        self.check()
        self.stage_name = name
        self._on_stage(name)

    def streamer(self, tokenizer) -> "TokenText":
        return TokenText(self, tokenizer)

    def stopping_criteria(self) -> "StopWhenCancelled":
        return StopWhenCancelled(self)

    def _text(self, text: str, tokens: int) -> None:
        self.text, self.tokens = text, tokens
        self._on_text(text, tokens)


class TokenText(BaseStreamer):
    """The completion so far, decoded after every token.

    Written here because transformers' TextStreamer holds text back until a word ends; feedback
    here is per token. Re-decoding the whole completion each time is cheap (answers are < 200
    tokens) and never splits a multi-byte character: a text ending in U+FFFD waits for the next token.
    """

    def __init__(self, progress: AnswerProgress, tokenizer):
        self.progress, self.tokenizer = progress, tokenizer
        self._ids: list[int] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() passes the prompt first
            self._prompt_seen = True
            return
        self._ids.extend(int(v) for v in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self._ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):
            self.progress._text(text, len(self._ids))

    def end(self) -> None:
        pass


class StopWhenCancelled(StoppingCriteria):
    def __init__(self, progress: AnswerProgress):
        self.progress = progress

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.progress.cancelled, dtype=torch.bool, device=input_ids.device)
