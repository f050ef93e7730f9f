"""A fake single-machine SLURM for tests: ``sbatch``, ``srun``, ``sacct``, ``scontrol``, ``scancel``.

Just enough of SLURM's behaviour for submitit's SlurmExecutor (what ``launcher=slurm`` uses):

- ``sbatch SCRIPT`` reads the ``#SBATCH`` lines (``--array``, ``--nodes``, ``--ntasks-per-node``),
  prints ``Submitted batch job N`` and runs each array task's script in a detached runner with
  ``SLURM_JOB_ID``, ``SLURM_ARRAY_JOB_ID``/``SLURM_ARRAY_TASK_ID``, ``SLURM_NTASKS``,
  ``SLURM_JOB_NUM_NODES`` and ``SLURM_JOB_NODELIST=localhost`` set;
- ``srun [--output O] [--error E] CMD`` (inside the script) starts ``SLURM_NTASKS`` processes with
  ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NODEID``, output files from the ``%A %a %j %t``
  patterns; with ``SLURM_KILL_BAD_EXIT=1`` a failing task stops the others;
- ``scontrol requeue ID`` marks the job: when its script ends, the runner starts it again;
- ``sacct -o JobID,State,NodeList --parsable2 -j N`` reports RUNNING / PENDING / COMPLETED /
  FAILED per array task; ``scancel ID`` kills the job's process group.

State lives in ``$FAKE_SLURM_DIR`` (one json per job). :func:`install` writes the commands into a
``bin`` directory to put first on ``PATH``; :func:`kill_all` cleans up after a test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ("sbatch", "srun", "sacct", "scontrol", "scancel")


def install(root: Path) -> dict[str, str]:
    """Create ``root/bin/<command>`` wrappers and the state dir; returns the env to use."""
    bin_dir, state = root / "bin", root / "state"
    bin_dir.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    for cmd in COMMANDS:
        path = bin_dir / cmd
        path.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} {cmd} "
                        '"$@"\n')
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_SLURM_DIR": str(state)}


def _state_dir() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


def _job_file(jid: str) -> Path:
    return _state_dir() / f"job-{jid}.json"


def _read(jid: str) -> dict:
    return json.loads(_job_file(jid).read_text())


def _write(jid: str, **updates) -> None:
    path = _job_file(jid)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(updates)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def jobs(state_dir: Path) -> dict[str, dict]:
    """Every job's record (test side)."""
    return {p.stem[4:]: json.loads(p.read_text()) for p in sorted(state_dir.glob("job-*.json"))}


def kill_all(state_dir: Path) -> None:
    for rec in jobs(state_dir).values():
        if rec.get("pgid") and rec.get("state") in ("RUNNING", "PENDING"):
            try:
                os.killpg(rec["pgid"], signal.SIGKILL)
            except OSError:
                pass


def _sbatch(args: list[str]) -> int:
    script = Path(args[-1])
    opts = {}
    for line in script.read_text().splitlines():
        m = re.match(r"#SBATCH --([\w-]+)(?:=(.*))?$", line.strip())
        if m:
            opts[m.group(1)] = (m.group(2) or "true").strip("'\"")
    counter = _state_dir() / "counter"
    base = int(counter.read_text()) + 1 if counter.exists() else 1000
    counter.write_text(str(base))
    nodes, per_node = int(opts.get("nodes", 1)), int(opts.get("ntasks-per-node", 1))
    if "array" in opts:
        lo, hi = re.match(r"(\d+)-(\d+)", opts["array"]).groups()
        tasks = [(f"{base}_{i}", str(i)) for i in range(int(lo), int(hi) + 1)]
    else:
        tasks = [(str(base), None)]
    for k, (jid, index) in enumerate(tasks):
        env = {"SLURM_JOB_ID": str(base + k if index is None else base * 100 + k),
               "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_JOB_NODELIST": "localhost",
               "SLURM_NTASKS": str(nodes * per_node), "SLURM_NTASKS_PER_NODE": str(per_node)}
        if index is not None:
            env.update(SLURM_ARRAY_JOB_ID=str(base), SLURM_ARRAY_TASK_ID=index)
        _write(jid, state="PENDING", requeue=False, starts=0, script=str(script), env=env,
               opts=opts)
        proc = subprocess.Popen([sys.executable, __file__, "_run", jid], start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=os.environ.copy())
        _write(jid, pgid=proc.pid)
    print(f"Submitted batch job {base}")
    return 0


def _run(jid: str) -> int:
    rec = _read(jid)
    env = {**os.environ, **rec["env"]}
    for _ in range(10):
        _write(jid, state="RUNNING", starts=_read(jid)["starts"] + 1)
        rc = subprocess.call(["bash", rec["script"]], env=env)
        if _read(jid).get("requeue"):
            _write(jid, state="PENDING", requeue=False, requeued=_read(jid).get("requeued", 0) + 1)
            continue
        _write(jid, state="COMPLETED" if rc == 0 else "FAILED", rc=rc)
        return rc
    _write(jid, state="FAILED", rc=-1)
    return 1


def _pattern(p: str, task: int) -> str:
    env = os.environ
    return (p.replace("%A", env.get("SLURM_ARRAY_JOB_ID", env["SLURM_JOB_ID"]))
             .replace("%a", env.get("SLURM_ARRAY_TASK_ID", "0"))
             .replace("%j", env["SLURM_JOB_ID"]).replace("%t", str(task)))


def _srun(args: list[str]) -> int:
    out = err = None
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("--output", "--error"):
            out, err = (args[i + 1], err) if args[i] == "--output" else (out, args[i + 1])
            i += 2
        else:
            i += 1
    cmd = args[i:]
    ntasks = int(os.environ["SLURM_NTASKS"])
    per_node = int(os.environ["SLURM_NTASKS_PER_NODE"])
    procs, files = [], []
    for t in range(ntasks):
        env = {**os.environ, "SLURM_PROCID": str(t), "SLURM_LOCALID": str(t % per_node),
               "SLURM_NODEID": str(t // per_node)}
        for pattern in (out, err):
            if pattern:
                Path(_pattern(pattern, t)).parent.mkdir(parents=True, exist_ok=True)
        fo = open(_pattern(out, t), "a") if out else None
        fe = open(_pattern(err, t), "a") if err else None
        files += [f for f in (fo, fe) if f]
        procs.append(subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe))
    kill_bad = os.environ.get("SLURM_KILL_BAD_EXIT") == "1"
    while any(p.poll() is None for p in procs):
        if kill_bad and any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
    for f in files:
        f.close()
    return max(abs(p.returncode) for p in procs)


def _sacct(args: list[str]) -> int:
    wanted = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for jid, rec in jobs(_state_dir()).items():
        if jid.split("_")[0] in wanted:
            print(f"{jid}|{rec['state']}|localhost")
    return 0


def _scontrol(args: list[str]) -> int:
    if args[:1] == ["requeue"]:
        _write(args[1], requeue=True)
        return 0
    return 1


def _scancel(args: list[str]) -> int:
    for jid in args:
        rec = _read(jid)
        _write(jid, state="CANCELLED")
        try:
            os.killpg(rec["pgid"], signal.SIGTERM)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    handlers = {"sbatch": _sbatch, "srun": _srun, "sacct": _sacct, "scontrol": _scontrol,
                "scancel": _scancel, "_run": lambda a: _run(a[0])}
    sys.exit(handlers[command](rest))
