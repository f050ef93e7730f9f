"""Backward + optimizer step behind one small interface: plain PyTorch / DDP, or DeepSpeed.

``PlainEngine`` (CPU and single/multi GPU without DeepSpeed): wraps the policy in
``DistributedDataParallel`` when torch.distributed is initialised (gradients synced only on the
last backward of an optimizer step), clips the gradient norm, and *skips* the step (warning) when
the loss or the gradient norm is not finite on any rank; after ``max_nonfinite_steps`` skipped steps
in a row it raises :class:`NonFiniteError`.

``DeepSpeedEngine`` (``train.deepspeed`` = a name in the package's ``conf/deepspeed/`` such as
``zero3``, or a DeepSpeed json path): prepares model/optimizer/scheduler
with ``accelerate`` + DeepSpeed (ZeRO-3 in the MUSEG recipe). The loss is scaled by the trainer
(DeepSpeed's own accumulation is set to 1 and boundaries are set explicitly). GPU only; unverified
on this machine (no CUDA, no deepspeed installed).

Example::

    eng = PlainEngine(model, optimizer, scheduler, max_grad_norm=1.0)
    eng.backward(loss / n_micro, last=False) ... eng.backward(loss / n_micro, last=True)
    grad_norm, stepped = eng.step(loss_value)
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from museg.config import deepspeed_config_path
from museg.dist import DistInfo, is_distributed

__all__ = ["NonFiniteError", "PlainEngine", "DeepSpeedEngine", "make_engine"]

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


class _NonFiniteGuard:
    def __init__(self, max_in_a_row: int) -> None:
        self.max_in_a_row = max(1, int(max_in_a_row))
        self.streak = 0
        self.skipped_total = 0

    def record(self, finite: bool, what: str) -> None:
        if finite:
            self.streak = 0
            return
        self.streak += 1
        self.skipped_total += 1
        log.warning("non-finite %s: optimizer step skipped (%d in a row, limit %d)", what,
                    self.streak, self.max_in_a_row)
        if self.streak >= self.max_in_a_row:
            raise NonFiniteError(
                f"{self.streak} optimizer steps in a row had a non-finite {what} (fix: lower "
                f"train.learning_rate, check the data, or raise train.max_nonfinite_steps)")


class PlainEngine:
    """Plain PyTorch optimisation (optionally DDP)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 max_grad_norm: float = 1.0, max_nonfinite_steps: int = 5,
                 info: DistInfo | None = None) -> None:
        self.module = model
        self.model: torch.nn.Module = model
        if is_distributed():
            from torch.nn.parallel import DistributedDataParallel as DDP

            dev = info.device if info is not None else "cpu"
            ids = [torch.device(dev).index] if str(dev).startswith("cuda") else None
            self.model = DDP(model, device_ids=ids)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.max_grad_norm = float(max_grad_norm or 0.0)
        self.guard = _NonFiniteGuard(max_nonfinite_steps)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        sync = not last and hasattr(self.model, "no_sync")
        with self.model.no_sync() if sync else contextlib.nullcontext():
            loss.backward()

    def step(self, loss_value: float) -> tuple[float, bool]:
        """Clip, step optimizer + scheduler unless non-finite; zero grads. -> (grad_norm, stepped)."""
        if self.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_(self.params, float("inf"))
        grad_norm = float(norm)
        finite = torch.tensor([float(math.isfinite(grad_norm) and math.isfinite(loss_value))])
        if is_distributed():
            import torch.distributed as dist

            dev = norm.device if dist.get_backend() == "nccl" else torch.device("cpu")
            finite = finite.to(dev)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        ok = bool(finite.item() > 0)
        if ok:
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.guard.record(ok, "loss/gradient")
        return grad_norm, ok


def _ds_config(path: str, world_size: int, max_grad_norm: float, bf16: bool) -> dict:
    cfg = json.loads(Path(path).expanduser().read_text())
    cfg["train_micro_batch_size_per_gpu"] = 1
    cfg["gradient_accumulation_steps"] = 1
    cfg["train_batch_size"] = world_size
    cfg["gradient_clipping"] = max_grad_norm if max_grad_norm > 0 else cfg.get("gradient_clipping", 0)
    for key in ("bf16", "fp16"):
        if isinstance(cfg.get(key), dict) and cfg[key].get("enabled") == "auto":
            cfg[key]["enabled"] = bool(bf16) if key == "bf16" else False
    for sect in ("zero_optimization",):
        for k, v in list(cfg.get(sect, {}).items()):
            if v == "auto":
                del cfg[sect][k]  # let DeepSpeed pick its defaults
    return cfg


class DeepSpeedEngine:
    """accelerate + DeepSpeed (ZeRO) optimisation; the trainer scales the loss itself."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 ds_config_path: str, max_grad_norm: float, bf16: bool, max_nonfinite_steps: int,
                 info: DistInfo) -> None:
        try:
            from accelerate import Accelerator
            from accelerate.utils import DeepSpeedPlugin
        except ImportError as e:  # pragma: no cover
            raise ImportError("train.deepspeed needs accelerate and deepspeed "
                              "(fix: pip install 'museg[gpu]')") from e
        ds_cfg = _ds_config(ds_config_path, info.world_size, max_grad_norm, bf16)
        plugin = DeepSpeedPlugin(hf_ds_config=ds_cfg)
        self.accelerator = Accelerator(deepspeed_plugin=plugin,
                                       mixed_precision="bf16" if bf16 else "no")
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(
            model, optimizer, scheduler)
        self.module = self.accelerator.unwrap_model(self.model)
        self.ds = self.accelerator.deepspeed_engine_wrapped.engine
        self.guard = _NonFiniteGuard(max_nonfinite_steps)

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        self.ds.set_gradient_accumulation_boundary(is_boundary=last)
        self.ds.backward(loss)

    def step(self, loss_value: float) -> tuple[float, bool]:
        self.ds.step()
        norm = self.ds.get_global_grad_norm()
        grad_norm = float(norm.item() if hasattr(norm, "item") else (norm or 0.0))
        ok = math.isfinite(grad_norm) and math.isfinite(loss_value)
        if self.scheduler is not None:
            self.scheduler.step()
        self.guard.record(ok, "loss/gradient")
        return grad_norm, ok

    def prepare_reference(self, ref: torch.nn.Module) -> torch.nn.Module:
        """Partition a frozen reference model with the same ZeRO stage (inference only)."""
        import deepspeed

        cfg = copy.deepcopy(self.accelerator.state.deepspeed_plugin.deepspeed_config)
        cfg.pop("optimizer", None)
        cfg.pop("scheduler", None)
        if cfg.get("zero_optimization", {}).get("stage") != 3:
            cfg["zero_optimization"] = {"stage": 0}
        engine, *_ = deepspeed.initialize(model=ref, config=cfg)
        engine.eval()
        return engine

    def save_state(self, directory: Path) -> None:
        """All ranks: DeepSpeed's sharded model + optimizer state into ``directory``."""
        self.accelerator.save_state(str(directory))

    def load_state(self, directory: Path) -> None:
        self.accelerator.load_state(str(directory))


def make_engine(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                train_cfg: Any, info: DistInfo) -> PlainEngine | DeepSpeedEngine:
    """``DeepSpeedEngine`` when ``train_cfg.deepspeed`` is set, else ``PlainEngine``."""
    ds = train_cfg.deepspeed
    if ds:
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.deepspeed={ds}: DeepSpeed needs CUDA (fix: "
                               "train.deepspeed=null on CPU)")
        return DeepSpeedEngine(model, optimizer, scheduler, str(deepspeed_config_path(ds)),
                               float(train_cfg.max_grad_norm), bool(train_cfg.bf16),
                               int(train_cfg.max_nonfinite_steps), info)
    return PlainEngine(model, optimizer, scheduler, float(train_cfg.max_grad_norm),
                       int(train_cfg.max_nonfinite_steps), info)
