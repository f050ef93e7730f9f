"""Every command in README.md's and launch/README.md's bash blocks runs, in a safe form.

Commands are extracted from the ```bash blocks (continuation lines joined, ``&&`` chains split,
comments dropped, ``...`` elisions removed) and classified by :data:`RULES`, a table of
``(pattern, kind, what the test does)``:

- ``museg``: ``python -m museg.run ...`` gets ``launcher.dry_run=true`` (it composes, validates the
  values and prints what would run; no GPU, weights, data or cluster needed) unless it already
  prints only (``--cfg``, ``--help``); no arguments is the demo (``experiment=demo``);
  ``task=plan`` (annotations only, never submits) runs for real on the real MUSEG annotation files
  (``paths.data_root`` replaced; skipped without them) and must end with its JSON line;
- ``setup`` / ``suite`` / ``signal``: installing packages, the test suite itself and signalling a
  running job are not run here (each says where it is covered).

A command that matches no rule fails :func:`test_every_command_has_a_rule`: add a rule when the
README gains a new kind of command, so an example can never silently rot.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
READMES = (REPO / "README.md", REPO / "launch" / "README.md")

#: (regex on the command, kind, reason). First match wins.
RULES: tuple[tuple[str, str, str], ...] = (
    (r"^python -m museg\.run\b", "museg", "run with launcher.dry_run=true (or as is with --cfg)"),
    (r"^python -m museg\.demo_seeds\b", "demo_seeds", "run on a missing directory: one line"),
    (r"^(sudo )?apt-get\b", "setup", "system packages (CI image)"),
    (r"^pip install\b", "setup", "Python packages (CI image)"),
    (r"^huggingface-cli download\b", "setup", "downloads weights (not available offline)"),
    (r"^python -m pytest\b", "suite", "the test suite itself"),
    (r"^ruff check\b", "suite", "the linter (CI)"),
    (r"^python tests/perf/", "suite", "benchmarks (tests/perf, run by hand)"),
    (r"^kill -USR2\b", "signal", "signals a running job (tests/launch/test_launch_submitit.py)"),
    (r"^launch/demo_ablation\.sh\b.*launcher\.dry_run=true", "script", "a launch script's dry run"),
    (r"^launch/compare_sweep\.sh\b", "compare_script", "compare on a missing sweep: one line"),
)


def _blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S)


def _strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` outside quotes."""
    out, quote = [], None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).strip()


def readme_commands() -> list[tuple[str, str]]:
    """``(README name:line, command)`` for every command line in every bash block."""
    found: list[tuple[str, str]] = []
    for readme in READMES:
        text = readme.read_text(encoding="utf-8")
        for block in _blocks(text):
            start = text[: text.index(block)].count("\n") + 1
            joined, first = "", None
            for offset, raw in enumerate(block.splitlines()):
                line = _strip_comment(raw)
                if first is None:
                    first = start + offset
                if line.endswith("\\"):
                    joined += line[:-1] + " "
                    continue
                joined += line
                for cmd in (c.strip() for c in joined.split("&&")):
                    if cmd:
                        found.append((f"{readme.relative_to(REPO)}:{first}", cmd))
                joined, first = "", None
    return found


def rule_for(cmd: str) -> tuple[str, str] | None:
    for pattern, kind, reason in RULES:
        if re.search(pattern, cmd):
            return kind, reason
    return None


def safe_argv(cmd: str, data_root: Path | None = None) -> list[str]:
    """The arguments to run a ``python -m museg.run`` README command safely (``data_root``: the
    real annotation files, which a ``task=plan`` command reads instead of its own data root)."""
    args = [a for a in shlex.split(cmd)[3:] if a != "..."]
    if not args:
        args = ["experiment=demo"]  # what no arguments means
    if "task=plan" in args:
        return [a for a in args if not a.startswith("paths.data_root=")] + \
            [f"paths.data_root={data_root}"]
    if not any(a.startswith(("--cfg", "-c", "--help", "-h", "--info")) for a in args):
        args.append("launcher.dry_run=true")
    return args


COMMANDS = readme_commands()


def test_readmes_have_commands():
    assert len(COMMANDS) >= 20
    assert any(c == "python -m museg.run" for _, c in COMMANDS)


def test_every_command_has_a_rule():
    unknown = [f"{where}: {cmd}" for where, cmd in COMMANDS if rule_for(cmd) is None]
    assert not unknown, ("README commands of an unknown kind (add a rule to RULES in "
                         f"tests/workflow/test_readme_commands.py): {unknown}")


def test_safe_argv():
    assert safe_argv("python -m museg.run") == ["experiment=demo", "launcher.dry_run=true"]
    assert safe_argv("python -m museg.run stage=2 --cfg job --resolve")[-1] == "--resolve"
    assert "..." not in safe_argv("python -m museg.run -m launcher=slurm stage=1 ...")


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, MUSEG_OUTPUT_ROOT=str(tmp_path / "outputs"),
                MUSEG_DATA_ROOT=str(tmp_path / "data"), WANDB_MODE="disabled")


@pytest.mark.parametrize("where,cmd", [c for c in COMMANDS if (rule_for(c[1]) or ("",))[0] == "museg"],
                         ids=lambda x: x if ":" in str(x) else None)
def test_museg_command_runs_in_safe_mode(where, cmd, tmp_path):
    from conftest import shared_data_dir

    if "task=plan" in cmd and shared_data_dir() is None:
        pytest.skip("task=plan reads the real MUSEG annotations (not found)")
    args = safe_argv(cmd, shared_data_dir())
    out = subprocess.run([sys.executable, "-m", "museg.run", *args], capture_output=True, text=True,
                         cwd=REPO, env=_env(tmp_path), timeout=300)
    msg = f"{where}: {cmd}\n-> museg {' '.join(args)}\n{out.stderr[-1500:]}"
    assert out.returncode == 0, msg
    assert "Traceback" not in out.stderr, msg
    assert out.stdout.strip(), msg
    if "task=plan" in args:  # the plan's last stdout line is its JSON object
        assert json.loads(out.stdout.strip().splitlines()[-1])["optimizer_steps"] > 0, msg


def test_demo_seeds_command_fails_cleanly_without_runs(tmp_path):
    cmds = [c for _, c in COMMANDS if (rule_for(c) or ("",))[0] == "demo_seeds"]
    for cmd in cmds:
        args = [str(tmp_path / "nothing")]
        out = subprocess.run([sys.executable, "-m", "museg.demo_seeds", *args], capture_output=True,
                             text=True, cwd=tmp_path, timeout=120)
        assert out.returncode != 0 and "Traceback" not in out.stderr, (cmd, out.stderr[-800:])


def test_launch_script_commands_run(tmp_path):
    """launch/*.sh lines: the dry run prints the jobs; compare on a missing sweep is one line."""
    for _, cmd in COMMANDS:
        kind = (rule_for(cmd) or ("",))[0]
        if kind not in ("script", "compare_script"):
            continue
        out = subprocess.run(["bash", *shlex.split(cmd)], capture_output=True, text=True,
                             cwd=REPO, env=_env(tmp_path), timeout=300)
        assert "Traceback" not in out.stderr, (cmd, out.stderr[-800:])
        if kind == "script":
            assert out.returncode == 0 and out.stdout.strip(), (cmd, out.stderr[-800:])
        else:
            lines = [x for x in out.stderr.splitlines() if x.strip()]
            assert out.returncode != 0 and len(lines) == 1, (cmd, out.stderr[-800:])

