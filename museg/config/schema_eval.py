"""Schema of ``eval`` (benchmark, decoding, the evaluation frame spec).

Part of :mod:`museg.config.schema`; one docstring per field, MUSEG's evaluation settings as defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

__all__ = ["EvalConfig", "EvalVideoConfig"]


@dataclass
class EvalVideoConfig:
    fps: float = 2.0
    """Frames per second at evaluation."""
    min_pixels: int = 12544
    """16 * 28 * 28, as MUSEG's evaluation."""
    total_pixels: int = 2809856
    """3584 * 28 * 28, as MUSEG's evaluation."""
    max_frames: int | None = None
    """No cap beyond the planner's default (768)."""
    max_pixels: int | None = None
    """Optional per-frame cap."""
    resize: str = "exact"
    """exact (bit-identical to the reference pipeline, for comparable numbers) or fast."""


@dataclass
class EvalConfig:
    benchmark: str = MISSING
    """Benchmark name."""
    kind: str = MISSING
    """tvg (mIoU, R@t), tal (F1@t), mixed (per item task), etbench (12 tasks) or suite."""
    annotation: str | None = None
    """Annotation file of the benchmark."""
    subset: str | None = None
    """E.T. Bench subset list (task -> source -> idx)."""
    video_root: str | None = None
    """Directory this benchmark's `video` fields resolve against (null: paths.video_root)."""
    template: str = ""
    """Instruction wrapped around each question: a template name, or text with `{problem}`."""
    template_file: str | None = None
    """A file holding the evaluation template text; when set it replaces `template`."""
    do_sample: bool = False
    """Greedy decoding by default."""
    max_new_tokens: int = 512
    """Tokens generated per answer."""
    batch_size: int = 4
    """Questions per generate call."""
    video: EvalVideoConfig = field(default_factory=EvalVideoConfig)
    """Video settings at evaluation."""
    backend: str = "hf"
    """hf or vllm."""
    gpu_memory_utilization: float = 0.9
    """vLLM memory fraction (eval.backend=vllm)."""
    max_model_len: int | None = None
    """vLLM context length (null: from the model)."""
    limit: int | None = None
    """Evaluate only the first N items."""
    predictions: str | None = None
    """task=score: predictions file to score (ours or the reference's json)."""
    allow_partial: bool = False
    """task=score: score a file whose items do not match the benchmark's annotation, labelled
    `<benchmark> (partial: n of N items)` (default: refuse it)."""
    suite: list[str] = field(default_factory=list)
    """benchmark=all: the benchmarks to run."""
