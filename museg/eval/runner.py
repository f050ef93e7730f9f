"""Benchmark inference runner: batched, resumable evaluation of one benchmark config.

``evaluate(cfg)`` loads the benchmark items (``cfg.eval.kind``: ``tvg``/``tal`` grounding json, or
``etbench``), runs greedy batched inference (HF backend, or vLLM with ``cfg.eval.backend=vllm``),
appends every finished item to ``cfg.run_dir/predictions.jsonl`` (flushed + fsynced; a restarted run
skips finished items), then computes the metrics and writes ``results.json``, ``results.md`` and plots.

Example::

    from omegaconf import OmegaConf
    from museg.eval.runner import evaluate
    metrics = evaluate(cfg)   # cfg composed by museg.run with task=eval benchmark=charades_sta
    print(metrics["miou"])

Videos that fail to decode are recorded with an ``error`` field and an empty answer (they count as
wrong); ``cfg.video.on_failure=fail`` raises instead. Consecutive items on the same video reuse the
decoded frames through :class:`museg.data.video.FrameCache`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from museg.data.prompts import template_from_cfg
from museg.eval.predictions import (
    PredictionWriter,
    extract_answer,
    finished_ids,
    read_predictions,
)

log = logging.getLogger(__name__)

__all__ = ["EvalError", "evaluate", "load_eval_items", "eval_question", "eval_video_spec",
           "make_backend", "HFBackend", "cfg_get"]


#: Abort when this many videos failed before any decoded (a wrong video root, a broken decoder).
_ABORT_AFTER_FAILURES = 8


class EvalError(RuntimeError):
    """A configuration or resume problem of an evaluation run (one-line message with the fix)."""


class Backend(Protocol):
    name: str
    model_path: str

    def generate(self, questions: Sequence[str], videos: Sequence[Any]) -> list[str]: ...


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg.a.b.c`` for a dotted ``key`` on DictConfig/dict, or ``default`` if missing/None.

    >>> cfg_get({"eval": {"limit": None, "kind": "tvg"}}, "eval.kind")
    'tvg'
    >>> cfg_get({"eval": {"limit": None}}, "eval.limit", 5), cfg_get({}, "x.y", 1)
    (5, 1)
    """
    node = cfg
    for part in key.split("."):
        if node is None:
            return default
        try:
            node = node.get(part) if isinstance(node, Mapping | DictConfig) else getattr(node, part)
        except Exception:  # missing interpolation, attribute error
            return default
    return default if node is None else node


def _plain(x: Any) -> Any:
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) else x


# ---------------------------------------------------------------------------------------- inputs
def load_eval_items(cfg: Any) -> list:
    """Benchmark items for ``cfg.eval`` (kind tvg/tal/etbench), truncated to ``cfg.eval.limit``."""
    from museg.data.annotations import load_etbench, load_grounding_eval

    kind = cfg_get(cfg, "eval.kind")
    ann = cfg_get(cfg, "eval.annotation")
    root = cfg_get(cfg, "eval.video_root") or cfg_get(cfg, "paths.video_root", "")
    on_bad = cfg_get(cfg, "data.on_bad_record", "fail")
    if not ann:
        raise EvalError("eval.annotation is not set (fix: benchmark=<name> or eval.annotation=PATH)")
    if not Path(ann).exists():
        raise EvalError(f"{ann}: annotation file not found (fix: set eval.annotation or "
                        "paths.data_root)")
    if kind in ("tvg", "tal", "mixed"):
        items = load_grounding_eval(ann, root, on_bad_record=on_bad)
    elif kind == "etbench":
        items = load_etbench(ann, root, on_bad_record=on_bad, subset=cfg_get(cfg, "eval.subset"))
    else:
        raise EvalError(f"eval.kind={kind!r} is not one of tvg, tal, mixed, etbench")
    limit = cfg_get(cfg, "eval.limit")
    if limit is not None:
        items = items[: int(limit)]
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        raise EvalError(f"{ann}: item ids are not unique; cannot resume safely")
    return items


def check_videos_exist(cfg: Any, items: Sequence) -> None:
    """Raise :class:`EvalError` (one line naming the video root and the first missing path) when
    not one video of ``items`` exists: a wrong video root, not a few broken files."""
    paths = list(dict.fromkeys(it.video_path for it in items))
    if not paths or any(os.path.exists(p) for p in paths):
        return
    key = "eval.video_root" if cfg_get(cfg, "eval.video_root") else "paths.video_root"
    raise EvalError(f"none of the {len(paths)} videos of benchmark={cfg_get(cfg, 'eval.benchmark')} "
                    f"exists under {key}={cfg_get(cfg, key)} (first missing: {paths[0]}; fix: set "
                    f"{key} to the folder holding the annotation's video paths, "
                    f"e.g. {items[0].video})")


def eval_question(template: str | None, problem: str) -> str:
    r"""The prompt question: ``template`` is a name in ``prompts.TEMPLATES``, text with
    ``{problem}``, or an instruction appended after the question on a new line.

    >>> eval_question("Answer in <answer></answer>.", "When?")
    'When?\nAnswer in <answer></answer>.'
    >>> eval_question("", "When?")
    'When?'
    """
    from museg.data.prompts import TEMPLATES, build_question

    if not template:
        return problem
    text = TEMPLATES.get(template, template)
    if "{problem}" not in text:  # an instruction to append
        return f"{problem}\n{text}"
    return build_question(text, problem)


def eval_video_spec(cfg: Any) -> dict:
    """Frame-sampling spec for evaluation (``cfg.eval.video``; MUSEG: fps 2, 16·28·28 min pixels)."""
    from museg.data.video import video_spec_from_cfg

    return dict(video_spec_from_cfg(cfg_get(cfg, "eval.video", {})))


# -------------------------------------------------------------------------------------- backends
class HFBackend:
    """Transformers ``generate`` on the current device (CPU or one GPU)."""

    name = "hf"

    def __init__(self, cfg: Any) -> None:
        import torch

        from museg.model.load import load_model_and_processor, model_path_from_cfg

        self.model_path = str(model_path_from_cfg(cfg.model))
        self.model, self.processor = load_model_and_processor(
            self.model_path, dtype=cfg_get(cfg, "model.dtype", "bfloat16"),
            attention=cfg_get(cfg, "model.attention", "auto"),
            device="cuda" if torch.cuda.is_available() else None)
        self.model.eval()
        self.do_sample = bool(cfg_get(cfg, "eval.do_sample", False))
        self.max_new_tokens = int(cfg_get(cfg, "eval.max_new_tokens", 512))

    def generate(self, questions: Sequence[str], videos: Sequence[Any]) -> list[str]:
        import torch

        from museg.model.generate import generate_completions
        from museg.model.inputs import build_prompt_text, build_video_inputs

        texts = [build_prompt_text(self.processor, q) for q in questions]
        inputs = build_video_inputs(self.processor, texts, list(videos))
        with torch.inference_mode():
            out = generate_completions(self.model, self.processor, inputs, num_generations=1,
                                       do_sample=self.do_sample,
                                       max_new_tokens=self.max_new_tokens)
        texts_out = list(out.texts if hasattr(out, "texts") else out)
        if len(texts_out) != len(questions):
            raise EvalError(f"backend returned {len(texts_out)} completions for "
                            f"{len(questions)} prompts")
        return texts_out


def make_backend(cfg: Any) -> Backend:
    """The inference backend named by ``cfg.eval.backend`` (``hf`` or ``vllm``)."""
    name = cfg_get(cfg, "eval.backend", "hf")
    if name == "hf":
        return HFBackend(cfg)
    if name == "vllm":
        from museg.eval.vllm_backend import VLLMBackend

        return VLLMBackend(cfg)
    raise EvalError(f"eval.backend={name!r} is not one of hf, vllm")


# --------------------------------------------------------------------------------------- running
def _settings_fingerprint(cfg: Any, spec: Mapping) -> dict:
    """Settings that change predictions; a resumed run must match them."""
    return {
        "benchmark": cfg_get(cfg, "eval.benchmark"),
        "kind": cfg_get(cfg, "eval.kind"),
        "annotation": str(cfg_get(cfg, "eval.annotation")),
        "subset": cfg_get(cfg, "eval.subset"),
        "template": cfg_get(cfg, "eval.template"),
        "model": str(cfg_get(cfg, "model.path") or cfg_get(cfg, "model.name")),
        "dtype": cfg_get(cfg, "model.dtype"),
        "do_sample": bool(cfg_get(cfg, "eval.do_sample", False)),
        "max_new_tokens": cfg_get(cfg, "eval.max_new_tokens"),
        "video": {k: _plain(v) for k, v in sorted(spec.items())},
        "decode_backend": cfg_get(cfg, "video.backend"),
        **_identity(cfg),
    }


def _identity(cfg: Any) -> dict:
    """Data and model identity (museg.fingerprint): annotation size + sha256, model files."""
    from museg.fingerprint import file_identity, model_identity

    ann = cfg_get(cfg, "eval.annotation")
    info = file_identity(ann) if ann else {}
    return {"annotation_size": info.get("size"), "annotation_sha256": info.get("sha256"),
            "model_identity": model_identity(cfg_get(cfg, "model.path"),
                                             cfg_get(cfg, "model.name"))}


def _check_resume(run_dir: Path, fp: dict, n_done: int, resume: Any = "auto") -> None:
    """Refuse to add predictions to a file made with other settings (``resume=force``: warn)."""
    path = run_dir / "eval_settings.json"
    if path.exists() and n_done:
        old = json.loads(path.read_text())
        # keys an older museg did not record are not compared
        diff = sorted(k for k in set(old) | set(fp) if k in old and old.get(k) != fp.get(k))
        if diff and str(resume).lower() == "force":
            log.warning("resume=force: adding to %s/predictions.jsonl although it was made with "
                        "different settings (%s)", run_dir, ", ".join(diff))
        elif diff:
            raise EvalError(
                f"{run_dir}/predictions.jsonl was made with different settings ({', '.join(diff)}) "
                "(fix: resume=never to start a fresh numbered run directory, a new "
                "experiment_name, restore the old settings, or resume=force to add to it anyway)")
    path.write_text(json.dumps(fp, indent=2, default=str))


def _record(item: Any, kind: str, output: str, error: str | None = None) -> dict:
    """One predictions.jsonl line: id, video, raw output, parsed answer, ground truth."""
    rec = {"item_id": item.item_id, "kind": kind, "video": item.video, "output": output,
           "answer": extract_answer(output), "groundtruth": item.groundtruth}
    if kind in ("tvg", "tal", "mixed"):
        from museg.eval.metrics import parse_answer_segments

        try:
            rec["segments"] = parse_answer_segments(output)
        except Exception as e:  # parsing never decides a metric here; keep the record
            rec["segments"] = None
            log.debug("parse_answer_segments failed on item %s: %s", item.item_id, e)
    if error:
        rec["error"] = error
    if item.extra:
        rec["extra"] = _plain(item.extra)
    return rec


def _batches(items: Sequence, size: int) -> list[list]:
    """Consecutive chunks (order kept, so items on the same video stay adjacent for the cache)."""
    size = max(1, int(size))
    return [list(items[i: i + size]) for i in range(0, len(items), size)]


class _Loader:
    """Decodes the videos of upcoming batches in one background thread (``video.prefetch`` batches
    ahead) so decoding overlaps generation. Only that thread touches the FrameCache while a batch
    is generated, so the cache needs no locking; consecutive items on one video hit the cache."""

    def __init__(self, cfg: Any, run_dir: Path, batches: list[list]) -> None:
        from museg.data.video import FrameCache, VideoError

        self.error_types = (VideoError, ValueError)  # ValueError: a video the planner rejects
        self.spec = eval_video_spec(cfg)
        self.backend = cfg_get(cfg, "video.backend", "torchcodec")
        self.timeout = cfg_get(cfg, "video.decode_timeout_s")
        disk = None
        if cfg_get(cfg, "video.cache.disk", False):
            disk = Path(cfg_get(cfg, "paths.cache_dir", str(run_dir / "cache"))) / "frames"
        self.cache = FrameCache(memory_items=int(cfg_get(cfg, "video.cache.memory_items", 8)),
                                disk_dir=disk)
        self.batches = batches
        self.ahead = max(0, int(cfg_get(cfg, "video.prefetch", 2)))
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="eval-decode") if self.ahead else None
        self.pending: deque[Future] = deque()
        self.next = 0

    def _load(self, batch: list) -> list:
        out: list = []
        for it in batch:
            try:
                out.append(self.cache.get(it.video_path, self.spec, backend=self.backend,
                                          timeout_s=self.timeout))
            except self.error_types as e:
                out.append(e)
        return out

    def __iter__(self) -> Iterator[tuple[list, list]]:
        for batch in self.batches:
            if self.pool is None:
                yield batch, self._load(batch)
                continue
            while self.next < len(self.batches) and len(self.pending) <= self.ahead:
                self.pending.append(self.pool.submit(self._load, self.batches[self.next]))
                self.next += 1
            yield batch, self.pending.popleft().result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def run_inference(cfg: Any, items: Sequence, backend: Backend | None,
                  run_dir: Path) -> tuple[dict, Backend | None]:
    """Predict every unfinished item, appending to ``run_dir/predictions.jsonl``.

    Returns (this run's stats: seconds, items done, frame-cache counters; the backend used or
    ``None`` when nothing was left to do).
    """
    pred_path = run_dir / "predictions.jsonl"
    done = finished_ids(pred_path)  # items whose video failed before are retried
    todo = [it for it in items if it.item_id not in done]
    on_failure = cfg_get(cfg, "video.on_failure", "replace")
    template = template_from_cfg(cfg.eval, "eval")  # eval.template_file, else eval.template
    kind = cfg_get(cfg, "eval.kind")
    if todo and backend is None:
        backend = make_backend(cfg)
    t0 = time.perf_counter()
    n_err = n_ok = 0
    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="item", disable=None,
               desc=f"eval {cfg_get(cfg, 'eval.benchmark', '')}", dynamic_ncols=True)
    loader = _Loader(cfg, run_dir, _batches(todo, cfg_get(cfg, "eval.batch_size", 4)))
    try:
        with PredictionWriter(pred_path) as writer:
            for batch, loaded in loader:
                ready, videos = [], []
                for it, video in zip(batch, loaded, strict=True):
                    if not isinstance(video, BaseException):
                        ready.append(it)
                        videos.append(video)
                        n_ok += 1
                        continue
                    if on_failure == "fail":
                        raise video
                    n_err += 1
                    if n_ok == 0 and n_err >= _ABORT_AFTER_FAILURES:
                        raise EvalError(
                            f"the first {n_err} videos all failed to decode (last: "
                            f"{it.video_path}: {video}); is paths.video_root right?") from video
                    log.error("item %s: video %s failed to decode (%s); recorded as wrong",
                              it.item_id, it.video_path, video)
                    writer.append(_record(it, kind, "", error=f"{type(video).__name__}: {video}"))
                    bar.update(1)
                if ready:
                    outs = backend.generate(
                        [eval_question(template, it.question) for it in ready], videos)
                    for it, out in zip(ready, outs, strict=True):
                        writer.append(_record(it, kind, out))
                        bar.update(1)
    finally:
        loader.close()
        bar.close()
    if n_err:
        log.warning("%d item(s) had undecodable videos (see `error` in %s)", n_err, pred_path)
    stats = {"seconds": round(time.perf_counter() - t0, 3), "items": n_ok + n_err,
             "decode_failures": n_err, "frame_cache": loader.cache.stats()}
    return stats, backend


def _model_path_or_none(cfg: Any) -> str | None:
    try:
        from museg.model.load import model_path_from_cfg

        return str(model_path_from_cfg(cfg.model))
    except Exception:  # provenance only: never fail a finished run for it
        return cfg_get(cfg, "model.path")


def evaluate(cfg: Any, backend: Backend | None = None) -> dict:
    """Run (or resume) one benchmark and write the report; returns the metrics dict.

    ``eval.kind=suite`` / ``eval.benchmark=all`` runs :func:`museg.eval.suite.run_suite` instead
    (returns benchmark name -> metrics).

    ``backend`` lets a caller (the suite) reuse a loaded model across benchmarks.
    """
    from museg.eval.report import collect_settings, write_report
    from museg.eval.score import compute_metrics

    if cfg_get(cfg, "eval.kind") == "suite" or cfg_get(cfg, "eval.benchmark") == "all":
        from museg.eval.suite import run_suite

        token = _IN_SUITE.set(True)
        try:
            results = run_suite(cfg, backend=backend)
        finally:
            _IN_SUITE.reset(token)
        _track_final_metrics(cfg, results)  # one wandb run for the suite: <benchmark>.<metric>
        return results
    run_dir = Path(cfg_get(cfg, "run_dir") or ".").absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    items = load_eval_items(cfg)
    check_videos_exist(cfg, items)
    spec = eval_video_spec(cfg)
    pred_path = run_dir / "predictions.jsonl"
    n_done = len(read_predictions(pred_path))
    _check_resume(run_dir, _settings_fingerprint(cfg, spec), n_done, cfg_get(cfg, "resume", "auto"))
    log.info("%s: %d items (%d already finished) -> %s", cfg_get(cfg, "eval.benchmark"),
             len(items), n_done, pred_path)
    run_stats, backend = run_inference(cfg, items, backend, run_dir)

    ids = [it.item_id for it in items]
    recs = {str(r["item_id"]): r for r in read_predictions(pred_path)}
    missing = [i for i in ids if i not in recs]
    if missing:
        raise EvalError(f"{pred_path}: {len(missing)} item(s) have no prediction after the run "
                        f"(first: {missing[0]}); rerun to resume")
    records = [recs[i] for i in ids]
    kind = cfg_get(cfg, "eval.kind")
    metrics = compute_metrics(kind, records, subset=None)
    model_path = backend.model_path if backend is not None else _model_path_or_none(cfg)
    settings = collect_settings(cfg, model_path=model_path, video_spec=spec)
    settings["this_run"] = run_stats
    settings["n_errors"] = n_err = sum(1 for r in records if r.get("error"))
    # the failure budget counts distinct videos (failed / seen), as in training
    bad_videos = sorted({str(r.get("video")) for r in records if r.get("error")})
    n_videos = len({str(r.get("video")) for r in records})
    settings["failed_videos"] = bad_videos
    max_frac = float(cfg_get(cfg, "video.max_failure_fraction", 0.05))
    if len(bad_videos) > max_frac * n_videos:
        log.error("%d of %d distinct videos (> video.max_failure_fraction=%s) are unreadable; "
                  "their %d item(s) score 0; see `error` in %s (rerun to retry them)",
                  len(bad_videos), n_videos, max_frac, n_err, pred_path)
    write_report(run_dir, cfg_get(cfg, "eval.benchmark", kind), kind, metrics, settings, records)
    if not _IN_SUITE.get():
        _track_final_metrics(cfg, metrics)
    return metrics


#: True while a suite evaluates its benchmarks (they are tracked as one wandb run, not several)
_IN_SUITE: ContextVar[bool] = ContextVar("museg_eval_in_suite", default=False)


def _track_final_metrics(cfg: Any, metrics: Mapping) -> None:
    """The final metrics into the run's wandb summary (no-op when wandb is disabled)."""
    from museg.launch.tracking import log_final_metrics

    log_final_metrics(cfg, metrics, Path(cfg_get(cfg, "run_dir") or ".").absolute())


if __name__ == "__main__":  # pragma: no cover - convenience: python -m museg.eval.runner cfg.yaml
    import sys

    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"))
    print(json.dumps(evaluate(OmegaConf.load(sys.argv[1])), indent=2, default=str))
