"""The typed schema of the museg configuration (Hydra structured configs).

The dataclasses here (and in :mod:`museg.config.schema_train`, :mod:`museg.config.schema_eval`,
:mod:`museg.config.schema_demo`) are
registered in Hydra's ConfigStore as ``museg_schema`` by :func:`register_schema` and sit first in
``conf/config.yaml``'s defaults list, so every YAML group is merged onto them: an unknown key or a
wrong type fails at composition. Each field carries a docstring; the values here are the MUSEG
paper's recipe (Qwen2.5-VL GRPO, arXiv 2505.20715), so ``conf/`` only states what a choice changes.
A default lives here and nowhere else.

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.structured(MusegConfig)
    >>> cfg.train.learning_rate, cfg.train.num_generations, cfg.video.total_pixels
    (1.5e-06, 8, 2809856)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from museg.config.schema_demo import DemoConfig, SyntheticConfig
from museg.config.schema_eval import EvalConfig
from museg.config.schema_train import RolloutConfig, TrainConfig

__all__ = ["MusegConfig", "register_schema", "PATCH"]

PATCH = 28  # pixels per merged vision token side (14-pixel patches, 2x2 spatial merge)

@dataclass
class PathsConfig:
    data_root: str = "data"
    """Root holding `train/stage_{1,2}.jsonl` and `eval/*.json` (env MUSEG_DATA_ROOT)."""
    video_root: str = "${paths.data_root}/videos"
    """Directory the `video` fields resolve against (a leading `videos/` is handled)."""
    output_root: str = "outputs"
    """Where run directories go: <output_root>/<experiment>/<task>/<run name>."""
    cache_dir: str = "~/.cache/museg"
    """Built tiny models, synthetic data and on-disk frame caches (env MUSEG_CACHE)."""


@dataclass
class LoraConfig:
    enabled: bool = False
    """Train LoRA adapters on the language model instead of all weights."""
    r: int = 64
    """LoRA rank."""
    alpha: int = 128
    """LoRA scaling numerator (alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA branch."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Linear layers of the language model that get adapters."""


@dataclass
class ModelConfig:
    name: str = MISSING
    """Short name of the choice (tiny, 3b, 7b)."""
    path: str = MISSING
    """Hub id or local directory of a Qwen2.5-VL checkpoint; `tiny` builds the offline model."""
    dtype: str = "bfloat16"
    """Parameter dtype: bfloat16, float16 or float32."""
    attention: str = "auto"
    """auto (flash_attention_2 on CUDA when installed, else sdpa), sdpa, eager, flash_attention_2."""
    gradient_checkpointing: bool = True
    """Recompute activations in backward to save memory."""
    freeze_vision: bool = False
    """Keep the vision tower and merger frozen (museg option; MUSEG trains all parameters)."""
    seed: int = 0
    """Seed of the offline tiny model (ignored for real checkpoints)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Optional LoRA adapters (PEFT)."""


@dataclass
class StageConfig:
    id: int = 1
    """MUSEG training stage (1: timestamp-aware, 2: refinement from stage 1)."""
    template: str = MISSING
    """Instruction wrapped around each question: text with one `{problem}` placeholder, or a name
    in museg.data.prompts.TEMPLATES (stage1, stage2, etbench)."""
    template_file: str | None = None
    """A file holding the template text (e.g. the instruction a released checkpoint was trained
    with); when set it replaces `template`."""


@dataclass
class RewardWeights:
    format: float = 1.0
    """Weight of the format reward (tags, parsable segments, timestamps in <think> for stage 1)."""
    global_matching: float = 1.0
    """Weight of global matching (F1 of merged predicted segments against the ground truth)."""
    local_matching: float = 1.0
    """Weight of local matching (mean (1 + GIoU) / 2 over index-paired segments)."""
    segment_matching: float = 0.0
    """Weight of the combined global + local reward (an alternative to the two above)."""


@dataclass
class RewardConfig:
    weights: RewardWeights = field(default_factory=RewardWeights)
    """Reward functions summed with these weights."""
    timestamp_aware: bool = True
    """Format reward requires each answered timestamp to appear in <think> (stage 1)."""
    strict: bool = False
    """Cleaner parsing (literal timestamp match, empty answer rejected); off = reference."""


@dataclass
class DataConfig:
    name: str = MISSING
    """Name of the data choice."""
    train_file: str = MISSING
    """Training jsonl (idx, problem, solution, video, duration, task)."""
    task_filter: str | None = None
    """Keep only `tvg` or `tal` samples."""
    max_samples: int | None = None
    """Truncate the training set (debugging)."""
    on_bad_record: str = "keep"
    """keep (MUSEG: every row is trained on; rows whose only fault is a segment with start >= end are
    kept as written and listed once at start, other bad rows stop), fail (stop at the first bad
    record) or skip (drop bad records and log how many)."""
    shuffle: bool = True
    """Shuffle each epoch with train.data_seed."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """Generator parameters when the data is synthetic (train_file: generated; museg.data.synthetic)."""


@dataclass
class VideoCacheConfig:
    memory_items: int = 8
    """Decoded videos kept in the in-memory LRU."""
    disk: bool = False
    """Also cache resized frames on disk under paths.cache_dir."""


@dataclass
class VideoConfig:
    fps: float = 2.0
    """Frames sampled per second of video."""
    max_frames: int | None = 448
    """Upper bound on sampled frames (MUSEG training: 448)."""
    min_frames: int = 4
    """Lower bound on sampled frames."""
    min_pixels: int = 12544
    """Minimum pixels per frame after resizing (16 * 28 * 28)."""
    max_pixels: int | None = None
    """Optional cap of pixels per frame (default 768 * 28 * 28 inside the planner)."""
    total_pixels: int = 2809856
    """Pixel budget over all frames (3584 * 28 * 28); frames shrink to fit it."""
    backend: str = "torchcodec"
    """Decoder: torchcodec (exact seek) or decord; never falls back silently. torchcodec applies a
    phone video's rotation flag, decord (and the reference) ignore it."""
    resize: str = "fast"
    """fast: bicubic+antialias on uint8 (decodes at the ffmpeg floor, mean 0.09 grey levels from
    the reference); exact: bit-identical to qwen-vl-utils 0.0.10 (~10% slower)."""
    decode_timeout_s: float | None = 120.0
    """Kill a decode worker after this many seconds (null: decode in-process, no worker)."""
    cache: VideoCacheConfig = field(default_factory=VideoCacheConfig)
    """Frame cache settings."""
    on_failure: str = "replace"
    """replace: swap a failed sample for another and quarantine it; fail: stop."""
    max_failure_fraction: float = 0.05
    """Abort when more than this fraction of videos failed."""
    prefetch: int = 2
    """Batches decoded ahead in background workers."""


@dataclass
class WandbConfig:
    mode: str = "${oc.env:WANDB_MODE,disabled}"
    """online, offline or disabled (WANDB_MODE respected)."""
    project: str = "museg"
    """wandb project."""
    entity: str | None = None
    """wandb entity (team)."""
    group: str = "${experiment_name}"
    """Groups the runs of one experiment/sweep."""
    job_type: str = "${task}"
    """train, eval, ..."""
    tags: list[str] = field(default_factory=list)
    """Extra tags; the chosen groups are added automatically."""
    require_online: bool = False
    """mode=online and the server is unreachable at start: refuse the run (default: log offline
    with one warning)."""


@dataclass
class LauncherConfig:
    name: str = "local"
    """local, slurm or submitit_local."""
    nproc_per_node: int = 1
    """Processes per node; one per GPU (launcher=local: on this machine)."""
    nodes: int = 1
    """Nodes per job (launcher=slurm)."""
    gpus_per_node: int = 0
    """GPUs per node requested from SLURM (one task each)."""
    dist_backend: str = "auto"
    """auto (nccl with CUDA, else gloo), nccl or gloo."""
    dry_run: bool = False
    """Print the sbatch script / command instead of running."""


@dataclass
class PlanConfig:
    gpu_check: str | None = None
    """task=plan: a gpu_check.json from tests/gpu/check.py; adds a GPU-hour projection."""


@dataclass
class PreflightConfig:
    target: str = "train"
    """train: scan data.train_file; eval: scan the benchmark annotation."""
    limit: int | None = None
    """Scan only the first N videos."""
    workers: int = 1
    """Videos checked in parallel (each in a killable decode worker)."""
    duration_tolerance_s: float = 1.0
    """Flag videos whose decoded duration differs from the annotation by more than this."""


@dataclass
class CompareConfig:
    runs: Any = None
    """task=compare: a multirun directory (searched for run directories) or a list of run
    directories (train, eval or demo runs)."""
    output: str | None = None
    """Where compare.md, compare.csv and the plots go (null: the first compare.runs directory)."""
    baseline: str | None = None
    """Override string of the baseline variant, e.g. `reward.weights.local_matching=1.0`
    (null: the first variant in sweep order)."""
    allow_mismatch: bool = False
    """Compare runs whose evaluation items, frame settings or model sizes differ."""
    task: str | None = None
    """Only runs of this task (train, eval, demo) when compare.runs holds several."""
    metrics: list[str] = field(default_factory=list)
    """Headline metrics of the table and plots (empty: every headline metric present)."""
    last_steps: int = 10
    """Training figures are the mean of the last N logged steps."""
    n_resamples: int = 2000
    """Bootstrap resamples of the paired per-item interval."""
    plots: bool = True
    """Write compare_metrics.png, compare_rewards.png and compare_vs_<key>.png."""
    wandb: bool = False
    """Also log the table (wandb.Table) and the plots to a wandb run (job_type=compare)."""


@dataclass
class MusegConfig:
    task: str = "train"
    """What to run: train, eval, preflight, score or demo."""
    seed: int = 42
    """Global seed: sampling, initialisation (MUSEG: 42; the demo uses 0)."""
    experiment_name: str = "default"
    """First level under outputs/ and the wandb group."""
    run_name: str = "default"
    """Stable run directory name derived from the overrides."""
    run_dir: str = "${hydra:runtime.output_dir}"
    """Absolute run directory (checkpoints, logs, predictions)."""
    resume: str = "auto"
    """auto: continue from the latest complete checkpoint; never; or a checkpoint path."""
    init_from: str | None = None
    """Initial weights: a run directory (its final model) or a model directory."""
    predictions: str | None = None
    """task=score: shorthand for eval.predictions."""
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    """task=plan: the training run laid out before it starts (museg.plan)."""
    demo: DemoConfig = field(default_factory=DemoConfig)
    """Budgets and shape of the embedded demo (task=demo, experiment=demo; museg.demo)."""
    compare: CompareConfig = field(default_factory=CompareConfig)
    """task=compare: which runs to compare and how (museg.compare)."""

def register_schema() -> None:
    """Register :class:`MusegConfig` as ``museg_schema`` (idempotent)."""
    ConfigStore.instance().store(name="museg_schema", node=MusegConfig)
