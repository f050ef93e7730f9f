"""What a checkpoint is, from its ``config.json``, and the model settings that fit it.

``task=eval model.path=/ckpt/MUSEG-7B`` without ``model=7b`` keeps the default ``model=tiny``,
whose settings (float32, sdpa; for training a whole group per process, no gradient checkpointing)
are for the offline tiny model. :func:`choose_model_settings` is the pure rule, tested with small
``config.json`` files and no weights:

- a tiny checkpoint (hidden size < 1024, e.g. the demo's warm-up model) keeps ``model=tiny``;
- evaluating a real Qwen2.5-VL checkpoint with ``model=tiny``: the checkpoint's dtype and
  ``attention=auto`` are chosen (explicit ``model.dtype=`` / ``model.attention=`` win) and one line
  says so;
- training one with ``model=tiny``, a checkpoint whose ``config.json`` cannot be read, or one that is
  not Qwen2.5-VL: refused with one line naming ``model=7b`` / ``model=3b``;
- ``model=7b`` pointing at a 3B checkpoint (or the reverse): a warning, nothing changed.

>>> info = CheckpointInfo("/ckpt", "Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl", 3584, 28,
...                       "bfloat16")
>>> info.size
'7b'
>>> choose_model_settings(info, "tiny", "eval", "float32", "sdpa").dtype
'bfloat16'
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ARCHITECTURE = "Qwen2_5_VLForConditionalGeneration"
#: (hidden_size, num_hidden_layers) of the released Qwen2.5-VL language models.
SIZES: dict[tuple[int, int], str] = {(2048, 36): "3b", (3584, 28): "7b", (5120, 64): "32b",
                                     (8192, 80): "72b"}
TINY_HIDDEN = 1024  # below this a checkpoint is a test/demo model, not a released size
MODEL_CHOICES = ("3b", "7b")  # conf/model/*.yaml for real checkpoints
DTYPES = ("bfloat16", "float16", "float32")


class CheckpointMismatch(ValueError):
    """``model=`` does not fit the checkpoint at ``model.path`` (one line, with the fix)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """The fields of a checkpoint's ``config.json`` that decide its settings."""

    path: str
    architecture: str | None
    model_type: str | None
    hidden_size: int | None
    num_layers: int | None
    dtype: str | None

    @property
    def size(self) -> str | None:
        """``3b``/``7b``/``32b``/``72b``, ``tiny`` below 1024 hidden units, else None."""
        if self.hidden_size is None:
            return None
        if self.hidden_size < TINY_HIDDEN:
            return "tiny"
        return SIZES.get((self.hidden_size, self.num_layers or 0))

    def describe(self) -> str:
        """``Qwen2_5_VLForConditionalGeneration 7b (hidden_size 3584, 28 layers, bfloat16)``."""
        size = f" {self.size}" if self.size else ""
        return (f"{self.architecture or 'unknown architecture'}{size} (hidden_size "
                f"{self.hidden_size}, {self.num_layers} layers, {self.dtype or 'dtype not stated'})")


@dataclass(frozen=True)
class ModelChoice:
    """Settings to use and the one line that says why."""

    dtype: str
    attention: str
    note: str


def parse_config(config: dict[str, Any], path: str = "") -> CheckpointInfo:
    """:class:`CheckpointInfo` from a loaded ``config.json`` (transformers 4 flat or 5 nested).

    >>> parse_config({"architectures": ["X"], "text_config": {"hidden_size": 2048,
    ...               "num_hidden_layers": 36}, "dtype": "bfloat16"}).size
    '3b'
    """
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}

    def pick(*keys: str) -> Any:
        for src in (config, text):
            for k in keys:
                if src.get(k) is not None:
                    return src[k]
        return None

    archs = config.get("architectures") or []
    dtype = pick("torch_dtype", "dtype")
    hidden, layers = pick("hidden_size"), pick("num_hidden_layers")
    return CheckpointInfo(path=path, architecture=archs[0] if archs else None,
                          model_type=config.get("model_type"),
                          hidden_size=int(hidden) if hidden is not None else None,
                          num_layers=int(layers) if layers is not None else None,
                          dtype=str(dtype).removeprefix("torch.") if dtype else None)


def read_checkpoint_info(path: str) -> CheckpointInfo | None:
    """Read ``<path>/config.json`` (a local directory, or a hub id already in the local HF cache);
    None when there is none to read."""
    local = Path(str(path)).expanduser()
    file: Path | None = local / "config.json" if local.is_dir() else None
    if file is None and str(path).count("/") == 1 and not str(path).startswith((".", "/", "~")):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(path), "config.json")
            file = Path(cached) if isinstance(cached, str) else None
        except Exception:  # noqa: BLE001 - no hub library / cache: nothing to read
            file = None
    if file is None or not file.is_file():
        return None
    try:
        return parse_config(json.loads(file.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError, TypeError):
        return None


def choose_model_settings(info: CheckpointInfo | None, model_name: str, task: str, dtype: str,
                          attention: str, explicit: Collection[str] = (),
                          model_path: str | None = None) -> ModelChoice | None:
    """The settings for ``model.path``'s checkpoint (``info``; None: unreadable) under ``model=``
    ``model_name``; None when nothing changes. Raises :class:`CheckpointMismatch` to refuse.

    ``explicit``: keys given on the command line (``model.dtype``, ``model.attention``), kept.
    """
    path = model_path or (info.path if info else "?")
    if model_name != "tiny":
        if info is not None and info.size in MODEL_CHOICES and info.size != model_name:
            log.warning("model.path=%s is a %s checkpoint but model=%s (fix: model=%s; the "
                        "settings are the same except the name)", path, info.size, model_name,
                        info.size)
        return None
    if info is not None and info.size == "tiny":
        return None  # a tiny checkpoint (the demo's warm-up model): model=tiny fits it
    if info is None:
        raise CheckpointMismatch(
            f"model.path={path}: no readable config.json, and model=tiny's settings (float32, sdpa) "
            "are for the offline tiny model (fix: add model=7b or model=3b)")
    if info.architecture != ARCHITECTURE:
        raise CheckpointMismatch(
            f"model.path={path} is a {info.describe()} checkpoint; museg loads {ARCHITECTURE} "
            "(fix: point model.path at a Qwen2.5-VL checkpoint)")
    fix = f"model={info.size}" if info.size in MODEL_CHOICES else "model=7b or model=3b"
    if task == "train":
        raise CheckpointMismatch(
            f"model.path={path} is a {info.describe()} checkpoint; model=tiny's training settings "
            f"(float32, sdpa, a whole group per process, no gradient checkpointing) are for the "
            f"offline tiny model (fix: add {fix})")
    new_dtype = dtype if "model.dtype" in explicit else (
        info.dtype if info.dtype in DTYPES else "bfloat16")
    new_attention = attention if "model.attention" in explicit else "auto"
    note = (f"model.path={path} is a {info.describe()} checkpoint: using model.dtype={new_dtype} "
            f"model.attention={new_attention}, not model=tiny's float32/sdpa (add {fix} to say so)")
    return ModelChoice(new_dtype, new_attention, note)


def apply_checkpoint_settings(cfg: Any, overrides: Collection[str] = ()) -> ModelChoice | None:
    """Apply :func:`choose_model_settings` to ``cfg.model`` in place for ``task=train|eval``
    (other tasks load no model); logs the note. Raises :class:`CheckpointMismatch`."""
    task, model = str(cfg.task), cfg.model
    path = str(model.path or "")
    if task not in ("train", "eval") or not path or path == "tiny":
        return None
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    name = str(model.name or "")
    info = read_checkpoint_info(path) if name == "tiny" or Path(path).expanduser().is_dir() \
        else None
    choice = choose_model_settings(info, name, task, str(model.dtype),
                                   str(model.attention), keys, model_path=path)
    if choice is not None:
        cfg.model.dtype, cfg.model.attention = choice.dtype, choice.attention
        log.warning("%s", choice.note)
    return choice
