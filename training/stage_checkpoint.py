"""Resume points inside a long training stage (vision-pretrain, segmenter-ft, the SFT stages).

The recipe's `--resume` skips finished stages, but a stage killed half-way (a session that ends, a
laptop lid) used to start over: on 2 cores that is up to an hour and a half of response SFT lost.
Every `resume_every` steps the stage writes OUT/resume/ (weights, optimizer, scheduler, RNG states
and the loop's own counters, through training.trainer_state: safetensors and JSON, no pickle); run
again with the same settings, it continues from there and deletes the directory when it finishes.
The settings that shape the result are stored with it, so a resume under other settings is refused
instead of silently mixing two runs.

Written here rather than with transformers' Trainer checkpoints because these loops are not Trainer
loops (hand-written to step two models, cached vision features, custom batches).
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from training.errors import TrainingError
from training.trainer_state import load_trainer_state, rng_state, save_trainer_state, set_rng_state

DIR_NAME = "resume"
# what a resume point holds; one written by another layout is refused, not half-read
LAYOUT = 2
# settings that change how a run goes, not what it computes
_NOT_FINGERPRINTED = {"quiet", "threads", "report_to", "resume_every", "device", "out", "vision_cache"}


def fingerprint(settings) -> dict:
    """The settings a resumed run must share with the interrupted one (JSON-comparable)."""
    return {k: v for k, v in sorted(dataclasses.asdict(settings).items()) if k not in _NOT_FINGERPRINTED}


class StageCheckpoint:
    """OUT/resume/ of one stage: `restore` at the start (it names what is saved), `start_clock` where
    the loop's time starts, `maybe_save` after each step, `finish` at the end. `elapsed()` is the
    loop's time including the runs it resumes."""

    def __init__(self, out: str | Path, stage: str, settings, every: int):
        self.dir = Path(out) / DIR_NAME
        self.stage, self.every = stage, int(every)
        self.settings = fingerprint(settings)
        self._parts: tuple = ({}, None, None, {})
        self._elapsed_before, self._t0 = 0.0, time.perf_counter()

    def restore(self, modules: dict, opt, sched, generators: dict | None = None) -> tuple[int, dict]:
        """Load the saved state into modules / opt / sched and the numpy generators the batches draw
        from (later resume points save the same objects); (steps already done, the loop's extra state).

        (0, {}) when there is nothing to resume: the stage starts from the beginning."""
        self._parts = (modules, opt, sched, generators or {})
        old = self.dir.with_name(DIR_NAME + ".old")
        if not self.dir.exists() and old.exists():  # killed between the two renames of maybe_save
            old.rename(self.dir)
        if not (self.dir / "trainer_state.json").is_file():
            return 0, {}
        st = load_trainer_state(self.dir)
        if st.get("layout") != LAYOUT:
            raise TrainingError(f"{self.dir} was written by another version of this stage (resume layout "
                                f"{st.get('layout', 1)}, this one reads {LAYOUT}); delete it to start the stage over")
        if st.get("stage") != self.stage or st.get("settings") != self.settings:
            raise TrainingError(f"{self.dir} holds a {st.get('stage')} run with other settings than this "
                                f"{self.stage} run ({_difference(st.get('settings') or {}, self.settings)}); "
                                f"delete {self.dir} to start this stage over")
        for name, module in modules.items():
            module.load_state_dict(st["modules"][name])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        set_rng_state(st["rng"])
        for name, gen in (generators or {}).items():
            gen.bit_generator.state = st["generators"][name]
        self._elapsed_before = float(st["elapsed_s"])
        print(f"[{self.stage}] resuming after step {st['step']} from {self.dir} "
              f"(delete it to start the stage over)", flush=True)
        return int(st["step"]), st.get("extra") or {}

    def start_clock(self) -> None:
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._t0

    def maybe_save(self, step: int, total: int, extra: dict | None = None) -> None:
        """After `step` steps: save every `every` steps (never after the last one; the stage's output
        follows at once). Written to a sibling directory and renamed, so a kill mid-write leaves the
        previous resume point whole."""
        if self.every <= 0 or step % self.every or step >= total:
            return
        modules, opt, sched, generators = self._parts
        tmp = self.dir.with_name(DIR_NAME + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_trainer_state(tmp, {"layout": LAYOUT, "stage": self.stage, "settings": self.settings, "step": step,
                                 "modules": {n: m.state_dict() for n, m in modules.items()},
                                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                 "rng": rng_state(), "generators": {n: g.bit_generator.state for n, g in generators.items()},
                                 "elapsed_s": self.elapsed(), "extra": extra or {}})
        old = self.dir.with_name(DIR_NAME + ".old")
        if self.dir.exists():
            self.dir.rename(old)
        tmp.rename(self.dir)
        shutil.rmtree(old, ignore_errors=True)

    def finish(self) -> None:
        """The stage wrote its output: the resume point is stale."""
        shutil.rmtree(self.dir, ignore_errors=True)


def _difference(saved: dict, now: dict) -> str:
    keys = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    return ", ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in keys[:4]) or "another stage"
