"""museg: reproduce and extend MUSEG (timestamp-aware multi-segment video grounding with GRPO).

Entry point: ``python -m museg.run`` (Hydra). Subpackages: ``data`` (annotations, video, prompts,
synthetic data), ``rewards`` (pure reward functions), ``model`` (Qwen2.5-VL loading, tiny offline
model), ``rl`` (GRPO trainer), ``eval`` (benchmarks and metrics), ``launch`` (cluster glue).
"""

__version__ = "0.1.0"
