"""The typed ``data.synthetic`` and ``demo`` sections of the museg configuration.

Part of :mod:`museg.config.schema`; one docstring per field. :class:`SyntheticConfig`'s defaults are
those of :func:`museg.data.synthetic.generate_synthetic` (``conf/data/synthetic.yaml`` and
``conf/experiment/demo.yaml`` state what they change); :class:`DemoConfig` holds the embedded demo's
warm-up budgets and run shape (:mod:`museg.demo.pipeline`; ``conf/experiment/demo*.yaml``).

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.structured(DemoConfig)
    >>> cfg.warmup_steps, cfg.stages, cfg.eval_each_stage, OmegaConf.structured(SyntheticConfig).fps
    (600, [1, 2], True, 10.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SyntheticConfig", "DemoConfig", "DemoVariant"]


@dataclass
class SyntheticConfig:
    n_train_videos: int = 32
    """Videos of the training split (``train.jsonl``)."""
    n_heldout_videos: int = 8
    """Videos of the held-out split (``heldout.jsonl``, ``heldout_eval.json``: benchmark=synthetic)."""
    queries_per_video: int = 2
    """Distinct queries asked of each video (fewer when its colours allow fewer)."""
    seed: int = 0
    """Seed of the generator (each video draws from its own seed, split and index)."""
    size: list[int] = field(default_factory=lambda: [112, 112])
    """Frame size [height, width] in pixels (even: yuv420p)."""
    fps: float = 10.0
    """Frames per second of the written videos."""
    duration_range: list[float] = field(default_factory=lambda: [8.0, 30.0])
    """[low, high] video duration in seconds."""
    n_colours: int = 3
    """Colours (each with its own shape) a video draws its events from (1-6)."""
    event_range: list[float] = field(default_factory=lambda: [2.0, 6.0])
    """[low, high] duration of one event (a shape visible) in seconds."""
    gap_range: list[float] = field(default_factory=lambda: [1.0, 4.0])
    """[low, high] gap between events in seconds (0: a shape changes colour in place)."""
    boundary_step: float = 0.5
    """Event boundaries are multiples of this (seconds; whole frames); also the grid of the demo's
    best-constant-answer baseline."""
    blob_frac: float = 0.6
    """Shape size as a fraction of the frame's short side."""
    motion: bool = True
    """Shapes move linearly while visible."""
    noise: float = 0.0
    """Standard deviation of the pixel noise (0: none)."""
    tal_fraction: float = 0.5
    """Share of tal (every occurrence) queries; the rest are tvg (one moment)."""
    n_phrasings: int | None = None
    """How many of the question phrasings per task to use (null: all)."""
    background: list[int] = field(default_factory=lambda: [48, 48, 48])
    """Background colour (RGB)."""
    clock_rows: int = 0
    """Rows at the bottom showing a time bar (full width at the longest duration; 0: none)."""


@dataclass
class DemoVariant:
    overrides: list[str] = field(default_factory=list)
    """Overrides added to every child run of the demo (e.g. reward.weights.local_matching=0.0)."""
    stages: list[int] | None = None
    """RL stages this variant runs (null: demo.stages)."""


@dataclass
class DemoConfig:
    warmup_seed: int | None = None
    """Seed of the supervised warm-up (null: `seed`); the demo fixes it so `seed=` varies only the
    RL stages from one warm-up model."""
    warmup_videos: int | None = None
    """Warm up on the first N training videos only (null: all of them); RL uses every video."""
    warmup_steps: int = 600
    """Optimizer steps of the supervised warm-up."""
    warmup_lr: float = 3.0e-3
    """Learning rate of the supervised warm-up."""
    warmup_batch_size: int = 8
    """Examples per warm-up step."""
    stage_overrides: dict[str, list[str]] = field(default_factory=dict)
    """Extra overrides for one RL stage only, keyed by phase (stage1, stage2); a key the user sets
    on the command line wins."""
    experiment: str = "demo"
    """The experiment every child run composes (demo_ablation: its children need its keys)."""
    shared_warmup: bool = False
    """One warm-up model and one held-out evaluation of it for every run of the experiment,
    whatever its seed or variant (computed once, under a lock)."""
    eval_each_stage: bool = True
    """Evaluate on the held-out split after every RL stage (false: after the last one only)."""
    variant: str | None = None
    """The ablation variant to run, a key of demo.variants (null: none)."""
    variants: dict[str, DemoVariant] = field(default_factory=dict)
    """Ablation variants by name (experiment=demo_ablation)."""
    stages: list[int] = field(default_factory=lambda: [1, 2])
    """RL stages to run after the warm-up, in order (each from the previous one's weights)."""
