"""Benchmark: plan + decode + resize of museg.data.video against the reference and the decode floor.

    python tests/perf/bench_video.py [FILE ...] [--threads N] [--minutes M] [--repeat R]

Without FILE it makes (once, cached under $MUSEG_CACHE or ~/.cache/museg) a typical 480p/30 fps
H.264 file of M minutes (default 4: the train spec caps it at 448 frames, eval takes 480) with ffmpeg's testsrc2 plus temporal noise. For MUSEG's
training spec (2 fps, <=448 frames, min_pixels 12544, total_pixels 2809856) and evaluation spec
(same without the frame cap) it times, on the same file and thread count N (default: all cores):

- ours: ``decode_video(path, spec, backend, threads=N)`` per backend and resize mode, in process
  with 1 torch thread (as in the worker: FFmpeg's N threads decode, OpenMP spin-waiting would only
  steal their cores) and through the killable worker process (``timeout_s`` set);
- reference: qwen-vl-utils 0.0.10 ``fetch_video`` with ``FORCE_QWENVL_VIDEO_READER=decord``;
- floor: ``ffmpeg -threads N -i FILE -f null -`` (every frame must be decoded anyway at 2 fps).

Runs are interleaved ``R`` times and the minimum wall time is kept (other processes add noise);
CPU seconds are printed too. It prints ours/floor (target <= 1.15) and reference/ours (target
~1.7), and the pixel difference of each resize mode against the reference's frames.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

os.environ["FORCE_QWENVL_VIDEO_READER"] = "decord"  # read by qwen-vl-utils at import
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from museg.data.video import EVAL_SPEC, TRAIN_SPEC, decode_video  # noqa: E402

SPECS = {"train": TRAIN_SPEC, "eval": EVAL_SPEC}


def make_file(minutes: float) -> Path:
    cache = Path(os.environ.get("MUSEG_CACHE", Path.home() / ".cache" / "museg")) / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"testsrc2_480p30_{minutes:g}min.mp4"
    if not out.is_file():
        print(f"writing {out} ({minutes:g} min, libx264 preset fast crf 23) ...", flush=True)
        tmp = out.with_suffix(".tmp.mp4")
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=854x480:rate=30,noise=alls=6:allf=t", "-t",
                        str(int(minutes * 60)), "-c:v", "libx264", "-preset", "fast", "-crf", "23",
                        "-pix_fmt", "yuv420p", str(tmp)], check=True)
        tmp.rename(out)
    return out


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(fn, children: bool = False):
    c0, t0 = (cpu_children() if children else cpu_self()), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    return out, wall, (cpu_children() if children else cpu_self()) - c0


def floor(path: Path, threads: int) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-threads", str(threads),
                    "-i", str(path), "-f", "null", "-"], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--specs", default="train,eval")
    ap.add_argument("--no-worker", action="store_true", help="skip the worker-process variant")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads for our in-process runs (the worker uses 1)")
    args = ap.parse_args()
    files = args.files or [make_file(args.minutes)]
    n = args.threads
    from qwen_vl_utils.vision_process import fetch_video

    print(f"threads={n} repeat={args.repeat} torch threads={torch.get_num_threads()} "
          f"load avg={os.getloadavg()[0]:.1f}")
    for path in files:
        for sname in args.specs.split(","):
            spec = SPECS[sname]
            def ours(backend, mode, timeout_s=None, path=path, spec=spec):
                saved = torch.get_num_threads()
                torch.set_num_threads(args.torch_threads)  # as in the decode worker
                try:
                    return decode_video(path, {**spec, "resize": mode}, backend,
                                        timeout_s=timeout_s, threads=n)
                finally:
                    torch.set_num_threads(saved)

            variants = {
                "floor ffmpeg -f null": (partial(floor, path, n), True),
                "reference fetch_video (decord)": (
                    partial(fetch_video, {"video": str(path), **spec},
                            return_video_sample_fps=True), False),
                "ours torchcodec fast": (partial(ours, "torchcodec", "fast"), False),
                "ours torchcodec exact": (partial(ours, "torchcodec", "exact"), False),
                "ours decord fast": (partial(ours, "decord", "fast"), False),
            }
            if not args.no_worker:
                variants["ours torchcodec fast (worker)"] = (
                    partial(ours, "torchcodec", "fast", 600), False)
                decode_video(path, {"nframes": 2}, timeout_s=600)  # start the worker
            best: dict[str, tuple[float, float]] = {}
            outputs = {}
            for _ in range(args.repeat):
                for name, (fn, children) in variants.items():
                    out, wall, cpu = timed(fn, children)
                    outputs[name] = out
                    w0, c0 = best.get(name, (float("inf"), float("inf")))
                    best[name] = (min(w0, wall), min(c0, cpu))
            ref = outputs["reference fetch_video (decord)"][0]
            print(f"\n{path.name}  spec={sname} {spec}  frames {tuple(ref.shape)}  "
                  f"load avg {os.getloadavg()[0]:.1f}")
            fl = best["floor ffmpeg -f null"][0]
            for name, (wall, cpu) in best.items():
                print(f"  {name:34s} wall {wall:7.2f} s  cpu {cpu:7.2f} s  x floor {wall / fl:5.2f}")
            ours = best["ours torchcodec fast"][0]
            print(f"  RATIO ours(torchcodec fast)/floor = {ours / fl:.2f}   (target <= 1.15)")
            print(f"  RATIO reference/ours(torchcodec fast) = "
                  f"{best['reference fetch_video (decord)'][0] / ours:.2f}   (target ~1.7)")
            print(f"  RATIO ours(torchcodec exact)/floor = "
                  f"{best['ours torchcodec exact'][0] / fl:.2f}")
            cfl, cref = best["floor ffmpeg -f null"][1], best["reference fetch_video (decord)"][1]
            print(f"  CPU-s RATIOS (robust when other processes load the machine): "
                  f"fast/floor {best['ours torchcodec fast'][1] / cfl:.2f}, "
                  f"exact/floor {best['ours torchcodec exact'][1] / cfl:.2f}, "
                  f"reference/fast {cref / best['ours torchcodec fast'][1]:.2f}")
            for name in ("ours torchcodec exact", "ours torchcodec fast", "ours decord fast"):
                d = (outputs[name].frames.float() - ref).abs()
                print(f"  pixels {name:24s} vs reference: max |diff| {d.max():.0f}, mean "
                      f"{d.mean():.4f}, share of values off {(d > 0).float().mean():.4f}, "
                      f"off by >2: {(d > 2).float().mean():.5f}")


if __name__ == "__main__":
    main()
