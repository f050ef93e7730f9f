"""task=compare (museg.compare): variants, seed grouping, exact table values, paired and seed-level
intervals, automatic columns, mismatch refusal, unfinished runs; the CLI contract on real eval runs;
wandb offline (per-run summaries and the compare table); the demo ablation sweep."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from museg.compare import run_compare
from museg.compare_runs import find_runs, flat_config
from museg.compare_stats import CompareProblem, group_variants, seed_difference
from museg.eval.metrics import paired_gain

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ synthetic runs
def _config(task: str, seed: int, **keys: object) -> dict:
    cfg: dict = {"task": task, "seed": seed, "experiment_name": "sweep",
                 "run_name": "${museg.run_name:}",
                 "paths": {"output_root": "${museg.abspath:${oc.env:MUSEG_OUTPUT_ROOT,outputs}}"},
                 "model": {"name": "tiny", "path": "tiny"},
                 "train": {"num_generations": 8, "per_device_train_batch_size":
                           "${train.num_generations}", "learning_rate": 2e-4},
                 "reward": {"weights": {"format": 1.0, "global_matching": 1.0,
                                        "local_matching": 1.0}},
                 "eval": {"benchmark": "synthetic", "kind": "tvg", "max_new_tokens": 8,
                          "video": {"fps": 1.0, "total_pixels": 100352}},
                 "wandb": {"mode": "disabled"}}
    for dotted, value in keys.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def _hydra(d: Path, cfg: dict, num: int, overrides: list[str]) -> None:
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))


def eval_run(root: Path, name: str, ious: list[float], seed: int, num: int,
             finished: bool = True, videos: str = "v", **keys: object) -> Path:
    """An eval run directory: tvg items with ground truth 0-10 s answered 0-(10 x IoU) s."""
    d = root / name
    _hydra(d, _config("eval", seed, **keys), num, [f"seed={seed}"])
    if not finished:
        return d
    recs = [{"item_id": str(i), "video": f"{videos}{i}.mp4", "answer": f"0-{10 * x:g}",
             "groundtruth": [[0.0, 10.0]], "extra": {"task": "tvg"}} for i, x in enumerate(ious)]
    (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    miou = sum(ious) / len(ious)
    (d / "results.json").write_text(json.dumps({
        "benchmark": "synthetic", "kind": "tvg", "n_items": len(ious),
        "metrics": {"n": len(ious), "miou": miou, "r@0.5": sum(x >= 0.5 for x in ious) / len(ious)},
        "settings": {"video": {"fps": 1.0, "total_pixels": 100352}}}))
    return d


BASE = {0: [0.2, 0.4, 0.6, 0.8], 1: [0.3, 0.5, 0.7, 0.9]}        # mIoU 0.5, 0.6
LONG = {0: [0.5, 0.7, 0.9, 1.0], 1: [0.6, 0.8, 0.9, 1.0]}        # mIoU 0.775, 0.825


def two_variant_sweep(root: Path) -> Path:
    """eval.max_new_tokens=8,16 x seed=0,1, in Hydra's job order."""
    num = 0
    for tokens, table in ((8, BASE), (16, LONG)):
        for seed, ious in table.items():
            eval_run(root, f"eval.max_new_tokens={tokens},seed={seed}", ious, seed, num,
                     eval__max_new_tokens=tokens)
            num += 1
    return root


def _csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------------- tests
def test_flat_config_resolves_keys_and_keeps_context_interpolations():
    flat = flat_config(_config("eval", 3))
    assert flat["train.per_device_train_batch_size"] == 8
    assert flat["run_name"] == "${museg.run_name:}"
    assert flat["eval.video.fps"] == 1.0 and flat["seed"] == 3


def test_seed_grouping_exact_values_and_paired_interval(tmp_path, capsys):
    root = two_variant_sweep(tmp_path / "sweep")
    c = run_compare(root, progress=False)
    assert [v.label for v in c.variants] == ["eval.max_new_tokens=8", "eval.max_new_tokens=16"]
    assert c.varying == ["eval.max_new_tokens"] and [v.seeds for v in c.variants] == [[0, 1]] * 2
    rows = _csv(root / "compare.csv")
    assert [r["eval.max_new_tokens"] for r in rows] == ["8", "16"]
    assert [r["runs"] for r in rows] == ["2", "2"] and rows[0]["seeds"] == "0 1"
    assert float(rows[0]["miou"]) == pytest.approx(0.55)
    assert float(rows[0]["miou_sd"]) == pytest.approx(math.sqrt(0.005))
    assert float(rows[1]["miou"]) == pytest.approx(0.8)
    # paired: each variant's seeds averaged per item, then the bootstrap of the differences
    base = [(a + b) / 2 for a, b in zip(BASE[0], BASE[1], strict=True)]
    long = [(a + b) / 2 for a, b in zip(LONG[0], LONG[1], strict=True)]
    want = paired_gain(base, long)
    assert float(rows[1]["delta_items_miou_gain"]) == pytest.approx(0.25)
    assert float(rows[1]["delta_items_miou_low"]) == pytest.approx(want["low"], abs=1e-6)
    assert float(rows[1]["delta_items_miou_high"]) == pytest.approx(want["high"], abs=1e-6)
    assert 0.15 <= want["low"] < want["high"] <= 0.3 + 1e-9
    # seed level: Welch interval over the seed means
    seeds = seed_difference([0.5, 0.6], [0.775, 0.825])
    assert float(rows[1]["delta_seeds_miou_low"]) == pytest.approx(seeds["low"])
    assert rows[0]["delta_items_miou_gain"] == ""  # the baseline has no difference to itself
    out = capsys.readouterr().out
    assert "| 8 (baseline) | 2 | 0,1 | 55.0 ± 7.1 |" in out
    assert "| 16 | 2 | 0,1 | 80.0 ± 3.5 |" in out
    low, high = (100 * float(rows[1][f"delta_items_miou_{k}"]) for k in ("low", "high"))
    assert f"+25.0 [{low:+.1f}, {high:+.1f}]" in out
    md = (root / "compare.md").read_text()
    assert "| 8 (baseline) | 2 | 0,1 | 55.0 ± 7.1 |" in md and "`eval.benchmark=synthetic`" in md
    for png in ("compare_metrics.png", "compare_vs_eval.max_new_tokens.png"):
        assert (root / png).read_bytes()[:4] == b"\x89PNG"


def test_baseline_is_chosen_by_override_string(tmp_path):
    root = two_variant_sweep(tmp_path / "sweep")
    c = run_compare(root, baseline="eval.max_new_tokens=16", plots=False, progress=False)
    assert c.baseline == 1
    assert c.deltas[0]["miou"]["items"]["gain"] == pytest.approx(-0.25)
    with pytest.raises(CompareProblem, match="no variant match.*eval.max_new_tokens=8"):
        run_compare(root, baseline="eval.max_new_tokens=32", plots=False, progress=False)


def test_columns_are_the_keys_that_vary_and_only_those(tmp_path):
    root = tmp_path / "sweep"
    for num, (lm, gm) in enumerate(((1.0, 1.0), (0.0, 1.0), (1.0, 0.0))):
        eval_run(root, f"r{num}", BASE[0], 0, num, reward__weights__local_matching=lm,
                 reward__weights__global_matching=gm)
    runs, _ = find_runs([root], progress=False)
    variants, varying, constant = group_variants(runs)
    assert varying == ["reward.weights.global_matching", "reward.weights.local_matching"]
    assert "seed" not in varying and "run_name" not in constant and "seed" not in constant
    assert constant["eval.max_new_tokens"] == 8 and constant["model.name"] == "tiny"
    assert variants[1].label == "reward.weights.global_matching=1.0," \
                                "reward.weights.local_matching=0.0"
    c = run_compare(root, progress=False)
    header = next(ln for ln in (root / "compare.md").read_text().splitlines()
                  if ln.startswith("| reward"))
    assert header.startswith("| reward.weights.global_matching | reward.weights.local_matching "
                             "| runs | seeds | miou |")
    assert "| eval.max_new_tokens | 8 |" in (root / "compare.md").read_text()  # constant keys
    assert len(c.variants) == 3 and all(len(v.runs) == 1 for v in c.variants)


@pytest.mark.parametrize(("key", "value", "what"), [
    ("eval__video__fps", 2.0, "frame spec: eval.video.fps"),
    ("model__name", "3b", "model size: model.name"),
])
def test_mismatched_runs_are_refused_in_one_line(tmp_path, key, value, what):
    root = tmp_path / "sweep"
    eval_run(root, "a", BASE[0], 0, 0)
    eval_run(root, "b", BASE[1], 0, 1, **{key: value})
    out = subprocess.run([sys.executable, "-m", "museg.compare", str(root)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert out.stderr.startswith("museg: config error: compare: runs are not comparable")
    assert what in out.stderr and "compare.allow_mismatch=true" in out.stderr
    c = run_compare(root, allow_mismatch=True, plots=False, progress=False)
    assert len(c.variants) == 2
    assert "Not like with like" in (root / "compare.md").read_text()


def test_different_eval_items_are_refused(tmp_path):
    root = tmp_path / "sweep"
    eval_run(root, "a", BASE[0], 0, 0, eval__max_new_tokens=8)
    eval_run(root, "b", BASE[0], 0, 1, videos="other", eval__max_new_tokens=16)
    with pytest.raises(CompareProblem, match="eval set: the evaluated items differ"):
        run_compare(root, plots=False, progress=False)


def test_unfinished_runs_are_skipped_and_counted(tmp_path, capsys):
    root = two_variant_sweep(tmp_path / "sweep")
    eval_run(root, "eval.max_new_tokens=16,seed=2", [], 2, 4, finished=False,
             eval__max_new_tokens=16)
    c = run_compare(root, plots=False, progress=False)
    assert [len(v.runs) for v in c.variants] == [2, 2] and len(c.unfinished) == 1
    assert "skipped 1 unfinished" in capsys.readouterr().out
    assert "Skipped 1 unfinished run(s)" in (root / "compare.md").read_text()


def test_train_runs_give_training_figures_and_seed_level_differences(tmp_path):
    root = tmp_path / "train"
    for num, (lm, seed, reward) in enumerate(((1.0, 0, 2.0), (1.0, 1, 2.2), (0.0, 0, 1.0),
                                              (0.0, 1, 1.4))):
        d = root / f"run{num}"
        _hydra(d, _config("train", seed, reward__weights__local_matching=lm), num, [])
        rows = [{"step": s, "reward/total": reward * s / 20, "reward/format": 1.0, "kl": 0.01 * s,
                 "completion_length": 50.0} for s in range(1, 21)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "summary.json").write_text(json.dumps({"step": 20, "wall_time_s": 100.0 + num,
                                                    "final_dir": str(d / "final")}))
    c = run_compare(root, progress=False)
    rows = _csv(root / "compare.csv")
    # mean of the last 10 logged steps: reward x (11..20)/20 -> reward x 0.775
    assert float(rows[0]["train/reward/total"]) == pytest.approx(2.1 * 0.775)
    assert float(rows[1]["train/reward/total"]) == pytest.approx(1.2 * 0.775)
    assert float(rows[0]["train/kl"]) == pytest.approx(0.155)
    assert rows[0]["train/steps"] == "20.0" and float(rows[1]["train/wall_time_s"]) == 102.5
    assert c.train_keys[:2] == ["reward/total", "reward/format"]
    assert (root / "compare_rewards.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_of_several_tasks_need_a_choice(tmp_path):
    root = tmp_path / "exp"
    eval_run(root / "eval", "a", BASE[0], 0, 0)
    d = root / "train" / "t"
    _hydra(d, _config("train", 0), 0, [])
    (d / "summary.json").write_text(json.dumps({"step": 1, "wall_time_s": 1.0, "final_dir": "x"}))
    with pytest.raises(CompareProblem, match=r"several tasks \(eval, train\).*compare.task"):
        run_compare(root, plots=False, progress=False)
    assert run_compare(root, task="eval", plots=False, progress=False).task == "eval"


def test_demo_runs_are_judged_by_their_last_rl_phase(tmp_path):
    exp = tmp_path / "abl"
    for num, (variant, seed, ious) in enumerate((("full", 0, BASE[0]), ("full", 1, BASE[1]),
                                                 ("no_local", 0, LONG[0]))):
        name = f"demo.variant={variant},seed={seed}"
        ev = eval_run(exp / "eval", f"{name}-stage2", ious, seed, num)
        tr = exp / "train" / f"{name}-stage2"
        tr.mkdir(parents=True)
        (tr / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/total": 1.5}) + "\n")
        (tr / "summary.json").write_text(json.dumps({"step": 1}))
        d = exp / "demo" / name
        _hydra(d, _config("demo", seed, demo__variant=variant), num, [])
        (d / "summary.json").write_text(json.dumps({
            "stages": {"warmup": {"miou": 0.1}, "stage2": {"miou": 0.0}}, "wall_seconds": 60.0,
            "runs": {"stage2_eval": str(ev), "stage2_train": str(tr)}}))
    c = run_compare(exp / "demo", baseline="demo.variant=full", progress=False)
    assert c.varying == ["demo.variant"] and [len(v.runs) for v in c.variants] == [2, 1]
    rows = _csv(exp / "demo" / "compare.csv")
    assert float(rows[0]["miou"]) == pytest.approx(0.55)  # from the stage-2 eval's predictions
    assert float(rows[1]["delta_items_miou_gain"]) == pytest.approx(0.775 - 0.55)
    assert float(rows[0]["train/reward/total"]) == 1.5 and rows[0]["train/wall_time_s"] == "60.0"
    assert "the same warm-up model: miou 10.0 before RL" in (exp / "demo" / "compare.md").read_text()


# ------------------------------------------------------------------------ the real entrypoint
def _museg(args: list[str], tmp_path: Path, timeout: int = 600, **env: str):
    full = dict(os.environ, MUSEG_OUTPUT_ROOT=str(tmp_path / "outputs"), **env)
    return subprocess.run([sys.executable, "-m", "museg.run", *args], capture_output=True,
                          text=True, env=full, timeout=timeout, cwd=tmp_path)


def test_contract_eval_sweep_then_task_compare(tmp_path):
    """The checked contract: a 2-value eval sweep, then ``task=compare`` on its directory."""
    sweep = _museg(["-m", "task=eval", "benchmark=synthetic", "eval.limit=4",
                    "eval.max_new_tokens=8,16"], tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    runs = tmp_path / "outputs" / "default" / "eval"
    out = _museg(["task=compare", f"compare.runs={runs}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| eval.max_new_tokens | runs | seeds | miou |" in out.stdout
    assert "| 8 (baseline) | 1 |" in out.stdout and "| 16 | 1 |" in out.stdout
    rows = _csv(runs / "compare.csv")
    assert [r["eval.max_new_tokens"] for r in rows] == ["8", "16"]
    assert (runs / "compare.md").is_file()
    again = _museg(["task=compare", f"compare.runs={runs}",  # ignores the compare runs
                    "compare.baseline=eval.max_new_tokens=16"], tmp_path)
    assert again.returncode == 0 and "2 finished runs in 2 variants" in again.stdout
    assert "| 16 (baseline) | 1 |" in again.stdout
    bad = _museg(["task=compare", f"compare.runs={tmp_path / 'nope'}"], tmp_path)
    assert bad.returncode == 2 and "compare.runs: directory" in bad.stderr


# ---------------------------------------------------------------------------------- wandb offline
def wandb_records(path: Path) -> list:
    """The records of an offline wandb run file (``run-<id>.wandb``: W&B's leveldb-style log of
    protobuf records: 7-byte header, 32 KiB blocks, each record chunk with a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (1, 2) else buf + chunk  # full/first start, middle/last append
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


def _wandb_run(run_dir: Path) -> tuple[object, dict, dict]:
    """(run record, config, summary) of the one offline wandb run under ``run_dir``."""
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    recs = wandb_records(files[0])
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    summary = {i.key: json.loads(i.value_json) for r in recs
               if r.WhichOneof("record_type") == "summary" for i in r.summary.update if i.key}
    return run, config, summary


def test_wandb_offline_run_summaries_and_compare_table(tmp_path):
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_SILENT": "true"}
    sweep = _museg(["-m", "task=eval", "benchmark=synthetic", "eval.limit=2",
                    "eval.max_new_tokens=4,8", "experiment_name=wb_sweep"], tmp_path, **env)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    runs = tmp_path / "outputs" / "wb_sweep" / "eval"
    for tokens in (4, 8):
        run_dir = runs / f"benchmark=synthetic,eval.limit=2,eval.max_new_tokens={tokens}"
        run, config, summary = _wandb_run(run_dir)
        assert (run.run_group, run.job_type) == ("wb_sweep", "eval")
        assert config["swept"] == {"benchmark": "synthetic", "eval.limit": 2,
                                   "eval.max_new_tokens": tokens}
        assert config["eval"]["max_new_tokens"] == tokens
        results = json.loads((run_dir / "results.json").read_text())["metrics"]
        assert summary["miou"] == results["miou"] and summary["tal.mean_f1"] == results["mean_f1"]
    out = _museg(["task=compare", f"compare.runs={runs}", "compare.wandb=true"], tmp_path, **env)
    assert out.returncode == 0, out.stderr[-3000:]
    run, config, _ = _wandb_run(runs)
    assert (run.run_group, run.job_type) == ("wb_sweep", "compare")
    assert config["varying"] == ["eval.max_new_tokens"]
    table_file = next(runs.glob("wandb/offline-run-*/files/media/table/compare/table_*.json"))
    table = json.loads(table_file.read_text())
    col = table["columns"].index("eval.max_new_tokens")
    assert [row[col] for row in table["data"]] == [4, 8]
    assert list(runs.glob("wandb/offline-run-*/files/media/images/compare/compare_metrics*.png"))


# --------------------------------------------------------------------------- the demo ablation
VARIANTS = ("full", "stage2_only", "no_local", "no_global", "format_only")


def test_demo_ablation_on_slurm_is_one_job_per_variant_and_seed(tmp_path):
    env = dict(os.environ, MUSEG_OUTPUT_ROOT=str(tmp_path / "out"))
    out = subprocess.run(["bash", str(REPO / "launch" / "demo_ablation.sh"),
                          "launcher.dry_run=true"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "15 job(s), 1 node(s) x 1 task(s)" in out.stdout
    assert "#SBATCH --array=0-14%15" in out.stdout
    dirs = {ln.split("run dir:")[1].strip() for ln in out.stdout.splitlines() if "run dir:" in ln}
    sweep = tmp_path / "out" / "demo_ablation" / "demo"
    assert dirs == {str(sweep / f"demo.variant={v},seed={s}") for v in VARIANTS for s in range(3)}
    assert not (tmp_path / "out").exists()  # nothing ran


SHORT = ["data.synthetic.n_train_videos=3", "data.synthetic.n_heldout_videos=2",
         "data.synthetic.duration_range=[6,8]", "data.synthetic.gap_range=[2,4]",
         "demo.warmup_steps=4", "demo.warmup_batch_size=2", "train.max_steps=2",
         "train.num_generations=2", "train.per_device_train_batch_size=4",
         "train.max_completion_length=12", "train.save_steps=1", "eval.max_new_tokens=12",
         "eval.batch_size=4"]


@pytest.mark.slow
def test_demo_ablation_sweep_on_submitit_local_then_compare(tmp_path):
    """2 variants x 2 seeds through submitit's local executor, one shared warm-up, then the
    callback's comparison; ``task=compare`` afterwards gives the same table."""
    out = _museg(["-m", "experiment=demo_ablation", "launcher=submitit_local",
                  "demo.variant=full,no_local", "seed=0,1", *SHORT], tmp_path, timeout=3000,
                 MUSEG_CACHE=str(tmp_path / "cache"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    root = tmp_path / "outputs" / "demo_ablation"
    assert len(list((root / "warmup").glob("*/config.json"))) == 1  # computed once
    assert len([d for d in (root / "eval").iterdir() if d.name.startswith("warmup-")]) == 1
    summaries = [json.loads(p.read_text()) for p in (root / "demo").glob("*/summary.json")]
    assert len(summaries) == 4 and all("stage1" not in s["stages"] for s in summaries)
    rows = _csv(root / "demo" / "compare.csv")
    assert [r["demo.variant"] for r in rows] == ["full", "no_local"]
    assert [r["runs"] for r in rows] == ["2", "2"] and rows[1]["delta_items_miou_gain"] != ""
    assert "| full (baseline) | 2 | 0,1 |" in out.stdout
    again = _museg(["task=compare", f"compare.runs={root / 'demo'}"], tmp_path)
    assert again.returncode == 0 and "| full (baseline) | 2 | 0,1 |" in again.stdout
