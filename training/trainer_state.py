"""A trainer's resume state on disk without pickle: tensors in safetensors, the rest in JSON.

`torch.load` of a pickled state runs whatever code the file names, so a checkpoint downloaded or
copied from elsewhere could execute code on resume. Here the optimizer, scheduler and RNG states
are split into their tensors (and numpy arrays), written with safetensors, and a JSON document
that holds everything else with each tensor replaced by a reference to its key. Loading reads
both and rebuilds the same nested structure: no code runs, and every value comes back bit-exact
(tensors keep dtype and shape, JSON round-trips floats exactly), so a resumed run continues as
the uninterrupted one would.

JSON has no tuples and only string keys, and optimizer state dicts use both (betas, integer
parameter ids), so those are written as tagged objects ({"__tuple__": [...]}, {"__items__":
[[key, value], ...]}) and turned back on load.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from training.errors import TrainingError

TENSORS_NAME = "trainer_state.safetensors"
JSON_NAME = "trainer_state.json"
FORMAT = "earl-trainer-state/1"
_LEGACY_NAME = "trainer_state.pt"


def _encode(obj, tensors: dict[str, torch.Tensor], key: str):
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        wide = obj.astype(np.int64) if obj.dtype == np.uint32 else obj  # torch has no full uint32 support
        tensors[key] = torch.from_numpy(np.ascontiguousarray(wide).copy())
        return {"__ndarray__": key, "dtype": obj.dtype.str}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{key}/{k}") for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, f"{key}/{i}/k"), _encode(v, tensors, f"{key}/{i}/v")]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"trainer state at {key!r}: cannot store a {type(obj).__name__} without pickle")


def _decode(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(np.dtype(obj["dtype"]))
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def save_trainer_state(ck_dir: str | Path, state: dict) -> None:
    """Write `state` (nested dicts / lists / tuples of tensors, arrays and plain values) to ck_dir."""
    from safetensors.torch import save_file

    ck = Path(ck_dir)
    tensors: dict[str, torch.Tensor] = {}
    doc = {"format": FORMAT, "state": _encode(state, tensors, "state")}
    save_file(tensors, str(ck / TENSORS_NAME))
    (ck / JSON_NAME).write_text(json.dumps(doc, indent=1))


def load_trainer_state(ck_dir: str | Path) -> dict:
    """The state `save_trainer_state` wrote to ck_dir (tensors on the CPU)."""
    from safetensors.torch import load_file

    ck = Path(ck_dir)
    if not (ck / JSON_NAME).is_file():
        old = " (it holds a pickled trainer_state.pt from an older version, which is not loaded: " \
              "resume from a checkpoint written by this version)" if (ck / _LEGACY_NAME).is_file() else ""
        raise TrainingError(f"{ck}: no {JSON_NAME} to resume from{old}")
    doc = json.loads((ck / JSON_NAME).read_text())
    if doc.get("format") != FORMAT:
        raise TrainingError(f"{ck / JSON_NAME}: format {doc.get('format')!r}, expected {FORMAT!r}")
    tensors = load_file(str(ck / TENSORS_NAME)) if (ck / TENSORS_NAME).is_file() else {}
    return _decode(doc["state"], tensors)


# ----------------------------------------------------------------------------------------------
# RNG states: arrays and tensors only, so they store as tensors

def rng_state() -> dict:
    version, internal, gauss_next = random.getstate()
    st = {"python": {"version": version, "state": np.asarray(internal, np.int64), "gauss_next": gauss_next},
          "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    py = st["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
