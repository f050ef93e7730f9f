"""The embedded default: ``python -m museg.run`` (= ``experiment=demo``) shows the method working.

Offline, on a CPU: synthetic multi-segment grounding videos → the tiny Qwen2.5-VL → a short
supervised warm-up on a small labelled subset of the training videos (``demo.warmup_videos``) →
stage-1 GRPO → stage-2 GRPO from stage 1's weights, both over every training video → held-out
evaluation after each phase, next to the best constant answer (what ignoring the video scores).
Every training and evaluation phase runs through the real entrypoint
(``python -m museg.run task=train stage=1 ...``, ``task=eval benchmark=synthetic ...``) in a child
process, with the same trainer, rewards, metrics and configs as the real recipe, only smaller
budgets (``conf/experiment/demo.yaml``; the ``demo`` section is
:class:`museg.config.schema_demo.DemoConfig`). The warm-up is seeded by ``demo.warmup_seed``, so
``seed=`` varies the RL stages from one warm-up model. Writes ``summary.json`` (``stages``,
``gain_vs_warmup`` with paired bootstrap intervals over held-out items, ``baseline``),
``demo_table.md`` and plots (reward curves per stage, held-out mIoU per phase) into the demo's run
directory; ``python -m museg.demo_seeds`` summarises several seeds.

- :mod:`museg.demo.pipeline`: ``run_demo(cfg)`` (``task=demo``), the phases as child runs;
- :mod:`museg.demo.warmup`: the supervised warm-up model (spawned process, shared directory);
- :mod:`museg.demo.report`: ``summary.json``, ``demo_table.md``, the plots;
- :mod:`museg.demo.progress`: numbered phases with an ETA, the children's progress bars;
- :mod:`museg.demo.seeds`: the seed-to-seed report (``python -m museg.demo_seeds RUN_DIR...``).

    from museg.demo.pipeline import run_demo
    run_demo(cfg)   # cfg composed with experiment=demo

Importing this package loads none of them (the seed report stays quick to start).
"""
