"""One base VLM for both EARL stages: the coarse and the response model as two adapters of one model.

EARL's released recipe fine-tunes one Qwen2.5-VL for both stages with separate LoRA adapters; a
manifest that names the same base directory for `coarse` and `response` gets exactly that: the base
weights are loaded once (a 3B in bf16 is 7.5 GB, which a 24 GB robot GPU cannot hold twice next to
SAM 2) and each stage switches to its own adapter (or to none) for its calls. The AFS hooks that the
response stage attaches to the shared model do nothing outside the response stage's calls.

Switching adapters changes the shared model, so the two stages must never run at once: the pipeline
gives them one lock (`EarlPipeline.shared_base`).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

STAGES = ("coarse", "response")


def same_base(a, b) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def attach_stage_adapters(base, loras: dict) -> tuple[object, dict]:
    """Wrap `base` with each stage's LoRA as a named peft adapter.

    loras: stage -> adapter directory or None. Returns (model, stage -> adapter name or None); the
    model is `base` itself when no stage has an adapter.
    """
    named = {stage: (stage if loras.get(stage) else None) for stage in STAGES}
    paths = [(stage, loras[stage]) for stage in STAGES if loras.get(stage)]
    if not paths:
        return base, named
    from peft import PeftModel

    first, path = paths[0]
    model = PeftModel.from_pretrained(base, str(path), adapter_name=first)
    for stage, path in paths[1:]:
        model.load_adapter(str(path), adapter_name=stage)
    return model.eval(), named


@contextmanager
def stage_adapter(model, adapter: str | None):
    """Run the block with `adapter` active (None: the bare base, every adapter disabled)."""
    is_peft = hasattr(model, "peft_config") and hasattr(model, "disable_adapter")
    if not is_peft:  # no stage has an adapter: nothing to switch
        yield
    elif adapter is None:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(adapter)
        yield
