"""Every config group choice and experiment composes; the paper's recipe is the default; bad
overrides give one line and exit code 2; run names are stable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from museg.config import check_overrides, compose_config, normalize_overrides, split_args, validate
from museg.config.naming import run_name_from_overrides, stage1_overrides

CONF = Path(__file__).resolve().parents[2] / "conf"
SCHEMA = Path(__file__).resolve().parents[2] / "museg" / "config"
GROUPS = ["model", "stage", "reward", "data", "rollout", "benchmark", "launcher", "experiment"]


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ALL_CHOICES = [(g, c) for g in GROUPS for c in _choices(g)]


@pytest.mark.parametrize(("group", "choice"), ALL_CHOICES, ids=[f"{g}={c}" for g, c in ALL_CHOICES])
def test_every_group_choice_composes_and_resolves(group, choice, tmp_path):
    cfg = compose_config([f"{group}={choice}", f"paths.output_root={tmp_path}",
                          "launcher.nproc_per_node=8"])
    cfg.run_dir = str(tmp_path / "run")
    container = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert container["task"] in ("train", "demo")
    assert validate(cfg, check_files=False) == []


@pytest.mark.parametrize("experiment", _choices("experiment"))
@pytest.mark.parametrize("stage", ["1", "2"])
def test_every_experiment_composes_for_both_stages(experiment, stage, tmp_path):
    cfg = compose_config([f"experiment={experiment}", f"stage={stage}",
                          f"paths.output_root={tmp_path}"])
    assert cfg.experiment_name == experiment
    assert cfg.stage.id == int(stage)
    if not experiment.startswith("demo"):  # demo, demo_ablation: the tiny model
        assert cfg.model.name in experiment
    OmegaConf.to_container(cfg.train, resolve=True)


def test_recipe_batch_is_prompts_per_step_on_any_dividing_world_size():
    """The recipe states 14 prompts (112 completions) per step; the world size only lays it out."""
    for n in (1, 7, 8, 16):
        assert validate(compose_config(["model=7b", f"launcher.nproc_per_node={n}"]),
                        check_files=False) == []
    problems = validate(compose_config(["model=7b", "launcher.nproc_per_node=3"]),
                        check_files=False)
    assert [p.key for p in problems] == ["train.prompts_per_step"]
    assert "1, 2, 4, 7, 8, 14, 16, 28, 56, 112" in str(problems[0])
    # evaluation, scoring and preflight never check the training batch
    for task in ("eval", "score", "preflight"):
        assert validate(compose_config([f"task={task}", "model=7b", "launcher.nproc_per_node=3"]),
                        check_files=False) == []
    tiny = compose_config(["model=tiny"]).train
    assert (tiny.prompts_per_step, tiny.per_device_train_batch_size,
            tiny.gradient_accumulation_steps) == (None, 8, 2)


def test_stage1_recipe_matches_paper():
    cfg = compose_config(["stage=1", "model=7b"])
    t = cfg.train
    assert (t.learning_rate, t.beta, t.num_generations) == (1.5e-6, 0.04, 8)
    assert (t.max_completion_length, t.max_prompt_length) == (4096, 4096)
    assert (t.prompts_per_step, t.micro_batch_completions) == (14, 8)
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps) == (None, None)
    assert (t.num_train_epochs, t.bf16, t.save_steps, t.save_total_limit) == (1, True, 100, 10)
    assert (cfg.seed, t.data_seed, t.temperature, t.logprob_temperature) == (42, 42, 0.9, 1.0)
    assert (t.max_total_length, t.deepspeed, t.vision_token_in_completion) == (4096, "zero3",
                                                                                "delete")
    assert cfg.model.freeze_vision is False and cfg.data.on_bad_record == "keep"
    assert cfg.model.gradient_checkpointing and cfg.model.dtype == "bfloat16"
    assert cfg.model.path == "Qwen/Qwen2.5-VL-7B-Instruct"
    v = cfg.video
    assert (v.fps, v.max_frames, v.min_pixels, v.total_pixels) == (2.0, 448, 12544, 2809856)
    e = cfg.eval
    assert (e.do_sample, e.max_new_tokens) == (False, 512)
    assert (e.video.min_pixels, e.video.total_pixels) == (16 * 28 * 28, 3584 * 28 * 28)
    assert cfg.reward.timestamp_aware is True
    assert dict(cfg.reward.weights) == {"format": 1.0, "global_matching": 1.0,
                                        "local_matching": 1.0, "segment_matching": 0.0}
    assert cfg.data.train_file.endswith("train/stage_1.jsonl")
    assert "timestamp" in cfg.stage.template and "<answer>" in cfg.stage.template
    assert "<think>" in cfg.stage.template and "{problem}" in cfg.stage.template
    assert cfg.init_from is None


def test_stage2_recipe_switches_template_reward_data_and_init(tmp_path):
    cfg = compose_config(["stage=2", "model=7b", f"paths.output_root={tmp_path}"])
    assert cfg.stage.id == 2 and cfg.reward.timestamp_aware is False
    assert cfg.data.train_file.endswith("train/stage_2.jsonl")
    assert "timestamp" not in cfg.stage.template.lower()
    assert "<think>" in cfg.stage.template and "<answer>" in cfg.stage.template
    # stage 2 starts from the stage-1 run of the same overrides
    assert cfg.init_from == str(tmp_path / "default" / "train" / "model=7b")
    cfg2 = compose_config(["stage=2", "init_from=/ckpt/stage1"])
    assert cfg2.init_from == "/ckpt/stage1"


def test_real_data_paths_follow_data_root(tmp_path):
    cfg = compose_config([f"paths.data_root={tmp_path}", "benchmark=thumos15"])
    assert cfg.data.train_file == f"{tmp_path}/train/stage_1.jsonl"
    assert cfg.paths.video_root == f"{tmp_path}/videos"
    assert cfg.eval.annotation == f"{tmp_path}/eval/thumos15.json"


def test_all_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(["paths.data_root=rel/data", "paths.output_root=rel/out"])
    assert cfg.paths.data_root == str(tmp_path / "rel" / "data")
    assert cfg.paths.output_root == str(tmp_path / "rel" / "out")
    assert Path(cfg.paths.cache_dir).is_absolute()


def test_validation_with_real_files(shared_data, tmp_path):
    (tmp_path / "videos").mkdir()
    cfg = compose_config([f"paths.data_root={shared_data}", f"paths.video_root={tmp_path}/videos"])
    assert validate(cfg) == []
    missing = compose_config([f"paths.data_root={tmp_path}/nope"])
    keys = [p.key for p in validate(missing)]
    assert keys == ["data.train_file", "paths.video_root"]


@pytest.mark.parametrize(("override", "key"), [
    ("train.num_generations=1", "train.num_generations"),
    ("train.forward_batch_size=3", "train.forward_batch_size"),
    ("train.per_device_train_batch_size=6", "train.per_device_train_batch_size"),
    ("video.total_pixels=100", "video.total_pixels"),
    ("eval.video.min_pixels=100", "eval.video.min_pixels"),
    ("video.max_pixels=1000", "video.max_pixels"),
    ("train.loss_type=bogus", "train.loss_type"),
    ("video.backend=opencv", "video.backend"),
])
def test_cross_field_validation_names_the_key(override, key):
    problems = validate(compose_config([override]), check_files=False)
    assert [p.key for p in problems] == [key]
    assert "fix:" in str(problems[0])


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "museg.run", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize(("args", "needle"), [
    (["model=13b"], "use one of 3b, 7b, tiny"),
    (["stage=3"], "use one of 1, 2"),
    (["train.learning_rate=abc"], "train.learning_rate"),
    (["trian.lr=1"], "trian"),
    (["train.per_device_train_batch_size=0"], "train.per_device_train_batch_size"),
    (["video.total_pixels=10"], "video.total_pixels"),
    (["-m", "data=synthetic", "train.num_generations=8,1"], "train.num_generations"),
    (["task=train", "paths.data_root=/nonexistent"], "/nonexistent/train/stage_1.jsonl"),
])
def test_bad_overrides_print_one_line_and_exit_2(args, needle):
    out = _run(*args)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("museg: config error:"), out.stderr
    assert needle in lines[0] and "Traceback" not in out.stderr


def test_print_stage2_recipe_resolved():
    out = _run("stage=2", "model=7b", "--cfg", "job", "--resolve")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for needle in ("learning_rate: 1.5e-06", "beta: 0.04", "num_generations: 8",
                   "max_completion_length: 4096", "prompts_per_step: 14", "temperature: 0.9",
                   "stage_2.jsonl", "timestamp_aware: false", "total_pixels: 2809856",
                   "max_frames: 448", "init_from: ", "Qwen/Qwen2.5-VL-7B-Instruct"):
        assert needle in text, needle


def test_normalize_and_split_arguments():
    assert normalize_overrides(["stage=2"]) == ["stage='2'"]
    assert normalize_overrides(["stage='2'"]) == ["stage='2'"]
    flags, overrides = split_args(["-m", "--cfg", "job", "a=1", "--config-name", "x", "b=2"])
    assert overrides == ["a=1", "b=2"]
    assert flags == ["-m", "--cfg", "job", "--config-name", "x"]


def test_run_names_are_stable_and_ignore_bookkeeping():
    a = run_name_from_overrides(["model=7b", "stage='2'", "reward.weights.format=0.5"])
    b = run_name_from_overrides(["reward.weights.format=0.5", "stage=2", "model=7b",
                                 "wandb.mode=offline", "task=train", "launcher=slurm",
                                 "paths.video_root=/v", "resume=never"])
    assert a == b == "model=7b,reward.weights.format=0.5,stage=2"
    assert run_name_from_overrides(["stage=1", "model=7b"]) == run_name_from_overrides(["model=7b"])
    long = run_name_from_overrides([f"train.k{i}={'x' * 20}" for i in range(20)])
    assert len(long) <= 120 and long == run_name_from_overrides(
        [f"train.k{i}={'x' * 20}" for i in reversed(range(20))])
    assert run_name_from_overrides(stage1_overrides(["stage=2", "model=3b"])) == "model=3b"


def test_run_directory_comes_from_overrides_not_time(tmp_path):
    args = ["stage=2", "model=3b", f"paths.output_root={tmp_path}", "--cfg", "job", "--resolve"]
    first, second = _run(*args), _run(*args)
    assert first.returncode == 0, first.stderr
    line = [ln for ln in first.stdout.splitlines() if ln.startswith("run_dir:")][0]
    assert line == f"run_dir: {tmp_path}/default/train/model=3b,stage=2"
    assert first.stdout == second.stdout


def test_every_schema_field_has_a_docstring():
    """Each field of museg/config/schema*.py is followed by its docstring (a section of
    MusegConfig whose type is a schema dataclass documents itself)."""
    import ast

    classes, undocumented = set(), []
    trees = {p: ast.parse(p.read_text()) for p in sorted(SCHEMA.glob("schema*.py"))}
    for tree in trees.values():
        classes |= {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    for path, tree in trees.items():
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            for node, after in zip(cls.body, [*cls.body[1:], None], strict=True):
                if not isinstance(node, ast.AnnAssign):
                    continue
                doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) \
                    and isinstance(after.value.value, str)
                section = ast.unparse(node.annotation) in classes
                if not (doc or section):
                    undocumented.append(f"{path.name}:{cls.name}.{node.target.id}")
    assert "schema_demo.py" in {p.name for p in trees}
    assert undocumented == []


def test_demo_and_synthetic_sections_are_typed():
    cfg = compose_config(["experiment=demo_ablation"])
    assert cfg.demo.warmup_steps == 600 and cfg.demo.stages == [1, 2]
    assert cfg.demo.variants["full"].overrides == [] and cfg.demo.variants["full"].stages is None
    assert cfg.demo.variants["stage2_only"].stages == [2]
    assert cfg.data.synthetic.fps == 4.0 and cfg.data.synthetic.noise == 0.0
    plain = compose_config(["data=synthetic"])  # keys the YAML leaves out: generator defaults
    assert plain.data.synthetic.n_train_videos == 24 and plain.data.synthetic.size == [112, 112]
    assert plain.demo.warmup_seed is None and plain.demo.experiment == "demo"
    for bad, key in (("demo.warmup_stepz=1", "warmup_stepz"), ("demo.warmup_steps=abc", "abc"),
                     ("data.synthetic.n_videos=3", "n_videos")):
        problem = check_overrides([bad], check_files=False)
        assert problem is not None and key in problem and "fix" in problem
