"""Typed schema of the museg configuration (Hydra structured configs) and its validation.

The dataclasses below are registered in Hydra's ConfigStore as ``museg_schema`` and sit first in
``conf/config.yaml``'s defaults list, so every YAML group is merged onto them: an unknown key or a
wrong type fails at composition. Each field carries a docstring; the values here are the MUSEG
paper's recipe (Qwen2.5-VL GRPO, arXiv 2505.20715), so ``conf/`` only states what a choice changes.

Cross-field rules that a type cannot express live in :func:`validate`, which returns a list of
:class:`ConfigProblem` (key, what is wrong, how to fix it) instead of raising, so the entrypoint can
print one line per problem and exit with code 2::

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.structured(MusegConfig)
    >>> cfg.train.learning_rate, cfg.train.num_generations, cfg.video.total_pixels
    (1.5e-06, 8, 2809856)
    >>> cfg.train.per_device_train_batch_size = 8   # one group of G=8 completions on 1 process
    >>> cfg.train.forward_batch_size = 3
    >>> [p.key for p in validate(cfg, check_files=False)]
    ['train.forward_batch_size']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from museg.rl.layout import LayoutError, layout_from_cfg, world_size_from_cfg

PATCH = 28  # pixels per merged vision token side (14-pixel patches, 2x2 spatial merge)
TRAINING_TASKS = ("train", "plan", "demo")  # tasks whose config must lay out a training batch


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
    synthetic: dict[str, Any] = field(default_factory=dict)
    """Generator parameters when the data is synthetic (see museg.data.synthetic)."""


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
class TrainConfig:
    learning_rate: float = 1.5e-6
    """AdamW learning rate."""
    beta: float = 0.04
    """KL coefficient (k3 estimator); 0 loads no reference model."""
    num_generations: int = 8
    """Completions per prompt (G)."""
    max_completion_length: int = 4096
    """Maximum new tokens per completion (vLLM `max_tokens`; MUSEG: 4096)."""
    max_prompt_length: int = 4096
    """Maximum prompt tokens including video tokens (never truncated: checked instead)."""
    max_total_length: int | None = 4096
    """Cap on prompt + completion tokens (MUSEG: vLLM `max_model_len` 4096, so a prompt of P
    tokens gets at most 4096 - P new tokens); both rollout backends enforce it. null: no cap."""
    prompts_per_step: int | None = 14
    """Prompts per optimizer step over all processes (MUSEG: 7 GPUs x 1 prompt x accumulation 2 =
    14, i.e. 112 completions); the per-device batch and accumulation are derived from the world
    size (museg.rl.layout). null: give per_device_train_batch_size and gradient_accumulation_steps."""
    micro_batch_completions: int = 8
    """Most completions one process forwards per micro-step when the layout is derived (MUSEG: one
    prompt's G=8)."""
    per_device_train_batch_size: int | None = None
    """Completions per device per micro-step (TRL semantics); null: derived from prompts_per_step.
    per_device x world size must be a multiple of num_generations (whole prompts per micro-step)."""
    gradient_accumulation_steps: int | None = None
    """Micro-steps per optimizer step; null: derived from prompts_per_step."""
    num_train_epochs: int = 1
    """Passes over the data."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: epochs decide)."""
    bf16: bool = True
    """bf16 autocast/weights on GPU (ignored on CPU)."""
    save_steps: int = 100
    """Checkpoint every N optimizer steps."""
    save_total_limit: int = 10
    """Keep the last K checkpoints."""
    data_seed: int = 42
    """Seed of the data order."""
    temperature: float = 0.9
    """Sampling temperature of rollouts (MUSEG: 0.9, TRL 0.15.1's GRPOConfig default)."""
    logprob_temperature: float | None = 1.0
    """Temperature the policy/reference logits are divided by for the loss and KL (MUSEG / TRL
    0.15.1: 1.0, unscaled); null: the sampling temperature (TRL >= 0.16 style)."""
    top_p: float = 1.0
    """Nucleus sampling of rollouts."""
    loss_type: str = "sequence"
    """sequence (per-sequence mean, reference), token (DAPO) or dr_grpo."""
    scale_rewards: bool = True
    """Divide advantages by the group std (false = Dr. GRPO)."""
    num_iterations: int = 1
    """Optimizer passes per generation batch (mu); >1 enables PPO clipping."""
    epsilon_low: float = 0.2
    """Lower clip of the importance ratio."""
    epsilon_high: float = 0.2
    """Upper clip of the importance ratio."""
    lr_scheduler_type: str = "linear"
    """transformers scheduler name."""
    warmup_ratio: float = 0.0
    """Fraction of steps of linear warm-up."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    logging_steps: int = 1
    """Log metrics every N steps."""
    completions_every: int = 10
    """Write the completions table every N steps."""
    forward_batch_size: int | None = None
    """Completions per policy/reference forward chunk (null: the whole micro-step at once)."""
    max_nonfinite_steps: int = 5
    """Abort after this many non-finite steps in a row."""
    deepspeed: str | None = "zero3"
    """DeepSpeed config: a name in the package's conf/deepspeed/ (zero3 = MUSEG's ZeRO-3 bf16) or a
    json path; needs CUDA. null: plain PyTorch / DDP (the tiny model and the demo)."""
    vision_token_in_completion: str = "delete"
    """A sampled <|video_pad|>/<|image_pad|> in a completion: delete (MUSEG: the token is removed,
    the rest kept) or cut (museg option: train only up to it)."""


@dataclass
class RolloutConfig:
    backend: str = "hf"
    """hf (transformers generate) or vllm (colocated, GPU extra)."""
    gpu_memory_utilization: float = 0.5
    """vLLM memory fraction per GPU."""
    tensor_parallel_size: int = 1
    """vLLM tensor parallelism."""
    max_model_len: int = 8192
    """vLLM context length (prompt + completion)."""


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
    demo: dict[str, Any] = field(default_factory=dict)
    """Budgets of the embedded demo (experiment=demo)."""
    compare: CompareConfig = field(default_factory=CompareConfig)
    """task=compare: which runs to compare and how (museg.compare)."""


def absolutize_paths(cfg: DictConfig) -> None:
    """Make user-given relative ``paths.*`` absolute (relative to the launch directory), in place.

    Interpolated values (the defaults) are left alone: they resolve through ``museg.abspath``.
    """
    for key in ("data_root", "video_root", "output_root", "cache_dir"):
        raw = OmegaConf.to_container(cfg.paths, resolve=False)[key]
        if isinstance(raw, str) and raw.strip() and "${" not in raw:  # "" is refused by validate
            cfg.paths[key] = str(Path(raw).expanduser().absolute())


def package_conf_dir() -> Path:
    """The config directory shipped with museg: conf/ of a source checkout, else ``museg.conf``."""
    source = Path(__file__).resolve().parent.parent / "conf"
    if (source / "config.yaml").is_file():
        return source
    from importlib.resources import files

    return Path(str(files("museg.conf")))


def deepspeed_config_path(value: str | None) -> Path | None:
    """``train.deepspeed`` as a file: a name in the package's ``conf/deepspeed/`` or a json path.

    Names resolve against the package, never the current directory, so a job started anywhere
    (SLURM, submitit) finds ``zero3``.

    >>> deepspeed_config_path("zero3").name, deepspeed_config_path(None)
    ('zero3.json', None)
    """
    if not value:
        return None
    named = package_conf_dir() / "deepspeed" / f"{value}.json"
    if "/" not in str(value) and not str(value).endswith(".json"):
        return named
    return Path(str(value)).expanduser()


def register_schema() -> None:
    """Register :class:`MusegConfig` as ``museg_schema`` (idempotent)."""
    ConfigStore.instance().store(name="museg_schema", node=MusegConfig)


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.problem} (fix: {self.fix})"


_CHOICES = {
    "task": ("train", "eval", "preflight", "score", "demo", "plan", "compare"),
    "model.dtype": ("bfloat16", "float16", "float32"),
    "model.attention": ("auto", "sdpa", "eager", "flash_attention_2"),
    "train.loss_type": ("sequence", "token", "dr_grpo"),
    "data.on_bad_record": ("keep", "fail", "skip"),
    "train.vision_token_in_completion": ("delete", "cut"),
    "video.backend": ("torchcodec", "decord"),
    "video.resize": ("fast", "exact"),
    "eval.video.resize": ("fast", "exact"),
    "video.on_failure": ("replace", "fail"),
    "rollout.backend": ("hf", "vllm"),
    "eval.backend": ("hf", "vllm"),
    "wandb.mode": ("online", "offline", "disabled"),
}


def _get(cfg: DictConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _frame_budget_problems(cfg: DictConfig) -> list[ConfigProblem]:
    out = []
    for prefix in ("video", "eval.video"):
        v = _get(cfg, prefix)
        if v.min_pixels < PATCH * PATCH:
            out.append(ConfigProblem(f"{prefix}.min_pixels", f"{v.min_pixels} < one 28x28 patch",
                                     f"set {prefix}.min_pixels >= {PATCH * PATCH}"))
        if v.max_pixels is not None and v.max_pixels < v.min_pixels:
            out.append(ConfigProblem(f"{prefix}.max_pixels",
                                     f"{v.max_pixels} < min_pixels {v.min_pixels}",
                                     f"raise {prefix}.max_pixels or lower min_pixels"))
        if v.total_pixels < v.min_pixels:
            out.append(ConfigProblem(f"{prefix}.total_pixels",
                                     f"{v.total_pixels} cannot fit one frame of min_pixels "
                                     f"{v.min_pixels}", f"raise {prefix}.total_pixels"))
        if v.fps <= 0:
            out.append(ConfigProblem(f"{prefix}.fps", f"{v.fps} is not positive",
                                     f"set {prefix}.fps > 0 (MUSEG: 2)"))
    return out


def _train_problems(cfg: DictConfig) -> list[ConfigProblem]:
    t = cfg.train
    out = []
    if t.num_generations < 2:
        out.append(ConfigProblem("train.num_generations", f"{t.num_generations} < 2: a group "
                                 "needs two completions for an advantage", "set it >= 2 (MUSEG: 8)"))
    for key in ("num_train_epochs", "save_steps", "save_total_limit", "num_iterations",
                "logging_steps", "micro_batch_completions"):
        if t[key] < 1:
            out.append(ConfigProblem(f"train.{key}", f"{t[key]} < 1", f"set train.{key} >= 1"))
    if cfg.task in TRAINING_TASKS and t.num_generations >= 2:
        try:
            layout = layout_from_cfg(t, world_size_from_cfg(cfg))
        except LayoutError as e:
            key, _, rest = str(e).partition(": ")
            problem, _, fix = rest.rpartition(" (fix: ")
            return [*out, ConfigProblem(key, problem, fix.rstrip(")"))]
        fb = t.forward_batch_size
        if fb is not None and (fb < 1 or layout.per_device % fb):
            out.append(ConfigProblem("train.forward_batch_size",
                                     f"{fb} does not divide the per-device micro-batch of "
                                     f"{layout.per_device} completions", "use a divisor of it or null"))
    if t.temperature <= 0 or (t.logprob_temperature is not None and t.logprob_temperature <= 0):
        out.append(ConfigProblem("train.temperature", "sampling and log-prob temperatures must be "
                                 "> 0", "use 0.9 / 1.0 (MUSEG)"))
    ds = deepspeed_config_path(t.deepspeed)
    if cfg.task in TRAINING_TASKS and ds is not None and not ds.is_file():
        names = sorted(p.stem for p in (package_conf_dir() / "deepspeed").glob("*.json"))
        out.append(ConfigProblem("train.deepspeed", f"{t.deepspeed!r}: no file {ds}",
                                 f"use one of {', '.join(names)}, a json path, or null"))
    if t.max_total_length is not None and t.max_total_length < 2:
        out.append(ConfigProblem("train.max_total_length", f"{t.max_total_length} leaves no room",
                                 "use 4096 (MUSEG) or null"))
    if not 0 <= t.epsilon_low < 1 or t.epsilon_high < 0:
        out.append(ConfigProblem("train.epsilon_low", "clip range must be 0 <= eps_low < 1 and "
                                 "eps_high >= 0", "use 0.2 / 0.2 (PPO) or 0.2 / 0.28 (DAPO)"))
    if t.beta < 0:
        out.append(ConfigProblem("train.beta", f"{t.beta} < 0", "use 0 (no KL) or 0.04"))
    if t.learning_rate <= 0 or not math.isfinite(t.learning_rate):
        out.append(ConfigProblem("train.learning_rate", f"{t.learning_rate} is not a positive "
                                 "finite number", "use 1.5e-6 (MUSEG)"))
    return out


def _file_problems(cfg: DictConfig) -> list[ConfigProblem]:
    out = []

    def need(key: str, path: str | None, kind: str = "file") -> None:
        if path is None:
            out.append(ConfigProblem(key, "not set", f"set {key}=<{kind}>"))
            return
        p = Path(path).expanduser()
        ok = p.is_file() if kind == "file" else p.is_dir()
        if not ok:
            out.append(ConfigProblem(key, f"{kind} {p} does not exist",
                                     f"create it, set {key}=<{kind}>, or set "
                                     "paths.data_root / paths.video_root"))

    generated = "generated"  # synthetic data, made at start (museg.data.sources)
    if cfg.task in ("train", "preflight") and cfg.data.train_file != generated and \
            (cfg.task == "train" or cfg.preflight.target == "train"):
        need("data.train_file", cfg.data.train_file)
        need("paths.video_root", cfg.paths.video_root, "directory")
    if cfg.task == "plan" and cfg.data.train_file != generated:  # reads annotations, no video
        need("data.train_file", cfg.data.train_file)
    if cfg.task == "eval" and cfg.eval.kind != "suite" and cfg.eval.annotation != generated:
        need("eval.annotation", cfg.eval.annotation)
        need("paths.video_root", cfg.paths.video_root, "directory")
    if cfg.task == "score":
        need("eval.predictions", cfg.eval.predictions)
    if cfg.task == "compare":  # reads finished runs only: no data, video or model files
        runs = cfg.compare.runs
        if runs is None:
            out.append(ConfigProblem("compare.runs", "not set",
                                     "set compare.runs=<multirun directory or [run dirs]>"))
        for run in [] if runs is None else [runs] if isinstance(runs, str) else list(runs):
            if not Path(str(run)).expanduser().is_dir():
                out.append(ConfigProblem("compare.runs", f"directory {run} does not exist",
                                         "point it at a multirun directory or run directories"))
    for key in ("stage.template_file", "eval.template_file"):
        if _get(cfg, key) is not None:
            need(key, _get(cfg, key))
    if cfg.task == "train" and cfg.stage.id == 2 and cfg.init_from is not None:
        p = Path(cfg.init_from).expanduser()
        if not p.exists():
            out.append(ConfigProblem("init_from", f"{p} does not exist (stage 2 starts from stage "
                                     "1's final model)", "run stage=1 first or set "
                                     "init_from=<stage-1 run dir or model dir>"))
    model_path = cfg.model.path
    local_like = model_path.startswith(("/", ".", "~"))
    if cfg.task in ("train", "eval") and local_like and not Path(model_path).expanduser().exists():
        out.append(ConfigProblem("model.path", f"directory {model_path} does not exist",
                                 "point model.path at a Qwen2.5-VL checkpoint directory"))
    return out


def validate(cfg: DictConfig, check_files: bool = True) -> list[ConfigProblem]:
    """Cross-field and filesystem checks; returns the problems found (empty when valid)."""
    out: list[ConfigProblem] = _value_problems(cfg, check_files)
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            out.append(ConfigProblem(key, f"{value!r} is not one of {', '.join(allowed)}",
                                     f"set {key}=<one of them>"))
    if cfg.stage.id not in (1, 2):
        out.append(ConfigProblem("stage.id", f"{cfg.stage.id} is not 1 or 2", "use stage=1|2"))
    if cfg.data.task_filter not in (None, "tvg", "tal"):
        out.append(ConfigProblem("data.task_filter", f"{cfg.data.task_filter!r} is not tvg|tal",
                                 "use data.task_filter=tvg, tal or null"))
    out += _frame_budget_problems(cfg)
    out += _train_problems(cfg)
    if check_files:
        out += _file_problems(cfg)
    return out


def _value_problems(cfg: DictConfig, check_files: bool) -> list[ConfigProblem]:
    """Values and paths refused up front (museg.checks): counts, finite floats, names, paths."""
    from museg.checks import path_problems, value_problems

    return value_problems(cfg) + path_problems(cfg, check_files)
