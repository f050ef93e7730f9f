"""Where a run's data comes from: turns ``data=synthetic`` / ``benchmark=synthetic`` into real files.

The synthetic choices name no file (``train_file: generated``); :func:`materialize_synthetic`
generates the dataset once into ``paths.cache_dir`` (cached by parameters) and points
``data.train_file``, ``eval.annotation`` and ``paths.video_root`` at it, so the trainer, the
evaluation and preflight read synthetic data through the same loaders as MUSEG's files::

    cfg = compose_config(["data=synthetic", "task=train"])
    materialize_synthetic(cfg)      # cfg.data.train_file -> .../synthetic-<hash>/train.jsonl
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

GENERATED = "generated"


def synthetic_params(cfg: DictConfig) -> dict:
    """Generator parameters of the run (the ``data.synthetic`` node as a plain dict)."""
    return dict(OmegaConf.to_container(cfg.data.synthetic, resolve=True))


def materialize_synthetic(cfg: DictConfig) -> bool:
    """Generate synthetic data if the config asks for it and point the config at it (in place).

    Returns True when the config uses synthetic data.
    """
    wants_train = cfg.data.train_file == GENERATED
    wants_eval = cfg.eval.annotation == GENERATED
    if not (wants_train or wants_eval):
        return False
    # lazy: the generator renders with PyAV, which the CLI (run.py imports this module) and runs
    # on real data never load
    from museg.data.synthetic import ensure_synthetic

    params = synthetic_params(cfg)
    paths = ensure_synthetic(Path(cfg.paths.cache_dir) / "synthetic", **params)
    with open_dict(cfg):
        if wants_train:
            cfg.data.train_file = str(paths.train_file)
        if wants_eval:
            cfg.eval.annotation = str(paths.heldout_eval_file)
        cfg.paths.video_root = str(paths.video_root)
    return True
