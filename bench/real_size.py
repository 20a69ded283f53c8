"""Real-size EARL, end to end, with random weights at the published sizes (issue "Real-size EARL").

    python bench/real_size.py [--work DIR] [--stages build,pipeline,infer,node,response7b,export]
    python bench/real_size.py --device cuda --response qwen2.5-vl-7b     # the GPU run (see README)

Models: coarse Qwen2.5-VL-3B, response Qwen2.5-VL-3B-sized (AFS 2048 -> 2048; a 7B does not fit beside
a 3B in 24 GB), SAM 2.1 Hiera-L, all built by `python -m earl_ros.model.scaffold` and loaded through
earl.yaml exactly as downloaded checkpoints would be. Each stage runs in its own process; the
parent samples that process tree's RSS every 0.2 s and reports the peak. Stages:
  build      the model directories (3B + 3B + SAM 2.1-L; the 7B response; a shared-base manifest)
  pipeline   in-process: load, describe, answer, segment 4 boxes on a 1280x720 frame; tokens/s
  shared     the same pipeline from a manifest naming one base for coarse and response
  infer      `earl-infer` on a 1280x720 frame (a subprocess, like a user)
  node       `earl-launch` + a 1280x720 camera + `earl-query`: the answer's header and mask size
  response7b the 7B-sized response model alone (AFS 2048 -> 3584) answering from a stored descriptor
  export     `earl-export` of the Hiera-L decoder (parity report), then `earl-infer --mask-backend onnxruntime`
  train      one optimisation step each of sft-coarse, sft-response and grpo (LoRA r=64, G=4) on two
             synthetic 1280x720 images, each command as a user runs it
Stage results accumulate in WORK/results.json, so stages can be run (again) one at a time.
Random weights write no answer grammar, so a query ends UNPARSEABLE_ANSWER (the node's and the
CLI's documented outcome); the segmenter is timed on given boxes. Writes bench/results/real_size.md.
DDS stays on this machine (LOCALHOST, a random domain id).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
QUERY = "which hand is holding something?"
STAGES = ("build", "pipeline", "shared", "infer", "node", "response7b", "export", "train")


def env() -> dict:
    e = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    e.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    e["AMENT_PREFIX_PATH"] = e.get("AMENT_PREFIX_PATH") or sys.prefix
    e["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_shm.xml")
    return e


def frame_720p(work: Path) -> Path:
    from PIL import Image

    p = work / "frame_1280x720.png"
    if not p.is_file():
        rng = np.random.default_rng(0)
        img = np.full((720, 1280, 3), 90, np.uint8)
        img[200:600, 300:700] = rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)
        Image.fromarray(img).save(p)
    return p


# ============================================================================ stages (child processes)
def edit_manifest(model_dir: Path, edit, out_dir: Path | None = None) -> None:
    """Apply edit(dict) to a copy of model_dir's earl.yaml and write it to out_dir (default: in place)."""
    from earl_ros.model.manifest import Manifest, write_manifest

    m = json.loads(json.dumps(Manifest.load(model_dir).raw))
    edit(m)
    (out_dir or model_dir).mkdir(parents=True, exist_ok=True)
    write_manifest(out_dir or model_dir, m)


def stage_build(a) -> dict:
    from earl_ros.model import scaffold

    out = {}
    main_dir, big = a.work / "model", a.work / "model_7b"
    t = time.perf_counter()
    if not (main_dir / "earl.yaml").is_file():
        scaffold.build_model_dir(main_dir, "qwen2.5-vl-3b", "qwen2.5-vl-3b", "sam2.1-hiera-large", a.dtype)
    out["build_3b_3b_sam_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if a.response7b and not (big / "response" / "config.json").is_file():
        tok = scaffold.build_qwen_tokenizer()
        scaffold.build_vlm_dir(big / "response", "qwen2.5-vl-7b", tok, a.dtype, seed=1)
    out["build_7b_s"] = time.perf_counter() - t
    def shared_base(m):
        m["name"] += "-shared-base"
        m["coarse"]["path"] = m["response"]["path"] = "../model/coarse"
        m["response"]["afs"] = f"../model/{m['response']['afs']}"
        m["segmenter"]["path"] = f"../model/{m['segmenter']['path']}"

    edit_manifest(main_dir, shared_base, out_dir=a.work / "model_shared")
    out["disk_gb"] = sum(f.stat().st_size for f in a.work.rglob("*") if f.is_file()) / 1e9
    return out


def _load_dtype(a):
    return None if a.load_dtype == "auto" else a.load_dtype


def apply_limits(a) -> None:
    """The run's limits (image side for the VLMs, generated tokens) into both manifests."""
    def limits(m):
        m["limits"].update(max_image_side=a.max_image_side, max_new_tokens=a.max_new_tokens,
                           coarse_max_new_tokens=max(8, a.max_new_tokens // 2))

    for d in ("model", "model_shared"):
        if (a.work / d / "earl.yaml").is_file():
            edit_manifest(a.work / d, limits)


def _count_tokens(tokenizer, text: str) -> int:
    """Generated tokens of a decoded text: each `<|unused_N|>` (the scaffold tokenizer's filler ids a
    random model emits) was one token; the rest re-tokenizes as generated."""
    import re

    fillers = re.findall(r"<\|unused_\d+\|>", text)
    rest = re.sub(r"<\|unused_\d+\|>", "", text)
    return len(fillers) + len(tokenizer(rest, add_special_tokens=False)["input_ids"])


def stage_pipeline(a, model_dir=None) -> dict:
    from PIL import Image

    from earl_ros.model.pipeline import EarlPipeline

    t = time.perf_counter()
    pipe = EarlPipeline.from_dir(model_dir or a.work / "model", device=a.device, dtype=_load_dtype(a))
    out = {"load_s": time.perf_counter() - t}
    img = np.asarray(Image.open(frame_720p(a.work)).convert("RGB"))
    t = time.perf_counter()
    inter = pipe.describe(img)
    out["describe_s"] = time.perf_counter() - t
    out["describe_tokens"] = _count_tokens(pipe.coarse.tokenizer, inter.text)
    t = time.perf_counter()
    g = pipe.answer(img, QUERY, interaction=inter)
    out["answer_s"] = time.perf_counter() - t
    out["answer_tokens"] = _count_tokens(pipe.response.tokenizer, g.raw_text)
    out.update(parse_status=g.parse_status, answer_timings_ms=g.timings_ms, descriptor_dim=int(inter.descriptor.size))
    boxes = np.array([[100, 100, 400, 500], [600, 200, 900, 700], [0, 0, 1280, 720], [500, 300, 560, 340]], np.float32)
    t = time.perf_counter()
    masks, scores = pipe.segmenter.segment(img, boxes)
    out["segment_4_boxes_s"] = time.perf_counter() - t
    out["mask_shape"] = list(np.asarray(masks).shape)
    return out


def stage_shared(a) -> dict:
    return stage_pipeline(a, a.work / "model_shared")


def stage_infer(a, backend: str = "torch") -> dict:
    cmd = [sys.executable, "-m", "earl_ros.cli.infer", "--model", str(a.work / a.main), "--image",
           str(frame_720p(a.work)), "--query", QUERY, "--json", "--out", str(a.work / f"infer_{backend}"),
           "--mask-backend", backend, "--device", a.device, "--dtype", a.load_dtype]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=3600)
    out = {"wall_s": time.perf_counter() - t, "exit": p.returncode, "stderr": p.stderr.strip()[-300:]}
    if p.stdout.strip():
        j = json.loads(p.stdout)
        out.update(error_code=j.get("error_code"), image_size=j.get("image_size"), timings_ms=j.get("timings_ms"),
                   parse_status=j.get("parse_status"), mask_backend=j.get("mask_backend"))
    from PIL import Image

    mask = a.work / f"infer_{backend}" / "mask.png"
    out["mask_png_size"] = list(Image.open(mask).size) if mask.is_file() else None
    return out


def stage_node(a) -> dict:
    """earl-launch with the real-size dir, a 1280x720 camera at 2 Hz, one earl-query."""
    e = env()
    folder = a.work / "camera"
    folder.mkdir(exist_ok=True)
    (folder / "f.png").write_bytes(frame_720p(a.work).read_bytes())
    log = open(a.work / "node.log", "wb")
    node = subprocess.Popen([sys.executable, "-m", "earl_ros.cli.launch", "--model", str(a.work / a.main),
                             "--namespace", "earl_rs", "--camera-topic", "/rs/camera", "--", "-p",
                             "coarse_enabled:=false", "-p", "stale_policy:=describe", "-p", "max_frame_age:=0.0",
                             "-p", f"device:={a.device}", "-p", f"dtype:={a.load_dtype}",
                             "-p", "query_timeout:=600.0"],
                            env=e, stdout=log, stderr=subprocess.STDOUT)
    cam = subprocess.Popen([sys.executable, "-m", "earl_ros.cli.replay", str(folder), "--topic", "/rs/camera",
                            "--rate", "2", "--loop", "--quiet"], env=e)
    t = time.perf_counter()
    try:
        for _ in range(30):  # until the camera's first frame has reached the node (NO_FRAME before that)
            q = subprocess.run([sys.executable, "-m", "earl_ros.cli.query", QUERY, "--namespace", "earl_rs",
                                "--timeout", "1200", "--no-publish"], capture_output=True, text=True, env=e,
                               timeout=1500)
            if '"NO_FRAME"' not in q.stdout:
                break
            time.sleep(2.0)
    finally:
        for p in (cam, node):
            p.terminate()
            p.wait(60)
    out = {"wall_s": time.perf_counter() - t, "query_exit": q.returncode}
    if q.stdout.strip():
        j = json.loads(q.stdout)
        out.update({k: j.get(k) for k in ("success", "error_code", "frame_id", "stamp", "mask_shape", "timings_ms")})
        out["message"] = (j.get("message") or "")[:160]
    out["node_exit"] = node.returncode
    out["traceback_in_log"] = "Traceback" in (a.work / "node.log").read_text(errors="replace")
    return out


def stage_response7b(a) -> dict:
    """The 7B-sized response model (AFS 2048 -> 3584, random) answering from a stored 3B descriptor."""
    from PIL import Image

    from earl_ros.model.afs import AFS, AFSConfig
    from earl_ros.model.vlm import ResponseModel

    afs_dir = a.work / "model_7b" / "afs"
    if not (afs_dir / "config.json").is_file():
        AFS(AFSConfig(in_dim=2048, out_dim=3584)).save_pretrained(afs_dir)
    t = time.perf_counter()
    rm = ResponseModel.from_pretrained(a.work / "model_7b" / "response", afs_dir, device=a.device,
                                       dtype=_load_dtype(a), max_new_tokens=a.max_new_tokens)
    out = {"load_s": time.perf_counter() - t}
    descriptor = np.random.default_rng(0).standard_normal(2048).astype(np.float32)
    img = np.asarray(Image.open(frame_720p(a.work)).convert("RGB"))
    t = time.perf_counter()
    raw = rm.respond(img, QUERY, descriptor, max_new_tokens=a.max_new_tokens)
    out["respond_s"] = time.perf_counter() - t
    out["tokens"] = _count_tokens(rm.tokenizer, raw.text)
    return out


def parity_summary(path: Path) -> dict | None:
    """The onnxruntime row of earl-export's parity report (parity.json)."""
    if not path.is_file():
        return None
    rep = json.loads(path.read_text())
    ort = rep.get("backends", {}).get("onnxruntime", {})
    return {"pass": rep.get("pass"), "max_abs_logit_diff": ort.get("max_abs_logit_diff"),
            "mask_iou_min": ort.get("mask_iou_min"), "flipped_pixels": ort.get("flipped_pixels"),
            "decoder_ms_5_boxes": (ort.get("per_box_count") or [{}])[-1].get("decoder_ms")}


def stage_export(a) -> dict:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "earl_ros.cli.export", "--model", str(a.work / a.main), "--out",
                        str(a.work / "export")], capture_output=True, text=True, env=env(), timeout=3600)
    out = {"export_s": time.perf_counter() - t, "export_exit": p.returncode}
    out["parity"] = parity_summary(a.work / "export" / "parity.json")
    onnx = str(a.work / "export" / "decoder.onnx")
    edit_manifest(a.work / a.main, lambda m: m["segmenter"].update(decoder_onnx=onnx))
    out["infer_onnxruntime"] = stage_infer(a, "onnxruntime")
    return out


def _timed(cmd: list, log: Path) -> dict:
    t = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env(), timeout=5400, cwd=REPO)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
    return {"exit": p.returncode, "s": time.perf_counter() - t, "last_line": (tail[0] if tail else "")[:160]}


def stage_train(a) -> dict:
    """One step each of the three training commands at 3B size (LoRA r=64; GRPO with G=4)."""
    py, w = [sys.executable, "-m", "training"], a.work
    data, out = w / "data", w / "train"
    out.mkdir(exist_ok=True)
    res = {"synth": _timed(py + ["synth", "--out", str(data), "--splits", "train=2,val=1,test=1", "--size", "1280x720",
                                 "--quiet"], out / "synth.log")}
    lora = ["--lora-r", "64", "--lora-alpha", "128", "--batch-size", "1", "--limit", "1", "--quiet", "--device", a.device]
    res["sft_coarse"] = _timed(py + ["sft-coarse", "--model", str(w / "model"), "--data", str(data), "--out",
                                     str(out / "coarse"), "--epochs", "1", *lora], out / "sft_coarse.log")
    res["sft_response"] = _timed(py + ["sft-response", "--model", str(w / "model"), "--data", str(data), "--out",
                                       str(out / "response"), "--epochs", "0.1", *lora], out / "sft_response.log")
    res["grpo"] = _timed(py + ["grpo", "--model", str(w / "model"), "--data", str(data), "--out", str(out / "grpo"),
                               "--steps", "1", "--prompts-per-step", "1", "--micro-batch", "1", "-G", "4",
                               "--max-completion-length", "32", "--lora-r", "64", "--limit", "1", "--quiet",
                               "--device", a.device], out / "grpo.log")
    return res


# ============================================================================ parent: run + measure
def run_stage(name: str, a) -> dict:
    import psutil

    cmd = [sys.executable, __file__, "--child", name, "--work", str(a.work), "--device", a.device, "--dtype", a.dtype,
           "--load-dtype", a.load_dtype, "--max-image-side", str(a.max_image_side),
           "--max-new-tokens", str(a.max_new_tokens), "--main", a.main]
    if not a.response7b:
        cmd.append("--no-response7b")
    print(f"[real_size] {name} ...", flush=True)
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env(), cwd=REPO)
    peak = [0.0]

    def sample():
        while p.poll() is None:
            try:
                procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
                peak[0] = max(peak[0], sum(q.memory_info().rss for q in procs) / 2**30)
            except psutil.Error:
                pass
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out_text, _ = p.communicate()
    th.join(1)
    res = {"stage": name, "exit": p.returncode, "wall_s": time.perf_counter() - t, "peak_rss_gb": peak[0],
           "run_dtype": a.load_dtype}
    for line in out_text.splitlines():
        if line.startswith("RESULT "):
            res["result"] = json.loads(line[7:])
    print(f"[real_size]   {json.dumps(res)[:600]}", flush=True)
    return res


def report(rows: list, a) -> str:
    import psutil

    lines = ["# Real-size EARL (`bench/real_size.py`)", "",
             f"Machine: {os.cpu_count()} CPU cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, device {a.device}; "
             f"VLM image side <= {a.max_image_side} px, <= {a.max_new_tokens} generated tokens; "
             f"weights random (written {a.dtype}) at the published sizes (earl_ros.model.scaffold); coarse Qwen2.5-VL-3B, "
             "response 3B-sized (AFS 2048 -> 2048), SAM 2.1 Hiera-L; a 1280x720 frame.", "",
             "| stage | exit | run dtype | wall s | peak RSS GiB | details |", "|---|---:|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['exit']} | {'-' if r['stage'] == 'build' else r.get('run_dtype', 'float32')} | {r['wall_s']:.1f} | "
                     f"{r['peak_rss_gb']:.2f} | "
                     f"{_details(r.get('result', {}))} |")
    lines += ["", "Generated tokens/s = tokens of the model's text / the stage's time (prefill included). "
              "Random weights write no answer grammar: a query's documented outcome is UNPARSEABLE_ANSWER."]
    return "\n".join(lines) + "\n"


def _details(res: dict) -> str:
    parts = []
    def num(v):
        return float(f"{v:.3g}") if isinstance(v, float) else v

    for k, v in res.items():
        v = {kk: num(vv) for kk, vv in v.items()} if isinstance(v, dict) else num(v)
        parts.append(f"{k}={v}")
    if "answer_tokens" in res and res.get("answer_s"):
        parts.append(f"answer tokens/s={res['answer_tokens'] / res['answer_s']:.2f}")
    if "tokens" in res and res.get("respond_s"):
        parts.append(f"tokens/s={res['tokens'] / res['respond_s']:.2f}")
    return "; ".join(str(p).replace("|", "/") for p in parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=None, help="folder for the model dirs (about 25 GB; default: a temp dir)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bfloat16", help="dtype the checkpoints are written in (as released)")
    ap.add_argument("--load-dtype", default="auto", help="dtype the models run in (auto: see README, `dtype`)")
    ap.add_argument("--max-image-side", type=int, default=1280, help="limits.max_image_side of the manifests")
    ap.add_argument("--max-new-tokens", type=int, default=96, help="limits.max_new_tokens (coarse: half)")
    ap.add_argument("--main", default="model", choices=("model", "model_shared"),
                    help="model dir of the infer / node / export stages: two bases, or one shared base")
    ap.add_argument("--no-response7b", dest="response7b", action="store_false", help="skip building the 7B")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "real_size.md"))
    a = ap.parse_args(argv)
    a.work = Path(a.work or tempfile.mkdtemp(prefix="earl-real-size-"))
    a.work.mkdir(parents=True, exist_ok=True)
    if a.child:
        res = globals()[f"stage_{a.child}"](a)
        print("RESULT " + json.dumps(res, default=str), flush=True)
        return 0
    apply_limits(a)
    store = a.work / "results.json"
    done = json.loads(store.read_text()) if store.is_file() else {}
    for name in [s for s in a.stages.split(",") if s and (s != "response7b" or a.response7b)]:
        apply_limits(a)  # after build too
        done[name] = run_stage(name, a)
        store.write_text(json.dumps(done, indent=1, default=str))
    if "export" in done and (a.work / "export" / "parity.json").is_file():  # the export stage's own report
        done["export"].setdefault("result", {})["parity"] = parity_summary(a.work / "export" / "parity.json")
    rows = [done[s] for s in STAGES if s in done]
    text = report(rows, a)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
