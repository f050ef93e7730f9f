"""Generation: every way museg turns (prompt, video) into completions, for training and evaluation.

- :mod:`museg.generation.hf` -- ``generate_completions`` (HF ``generate``, G completions per
  prompt), the :class:`~museg.generation.hf.Rollout` record, EOS helpers and ``truncate_at_eos``;
- :mod:`museg.generation.seeded` -- ``sample_completions``: one seed per completion (the trainer's
  HF backend), so a completion does not depend on the rows it is generated with;
- :mod:`museg.generation.vllm` -- ``video_request`` (the ONE vLLM request builder for pre-planned
  frames, used by training and evaluation), ``VLLMRollout`` (training), ``VLLMNotInstalledError``;
- :mod:`museg.generation.backends` -- ``make_backend(cfg)``: the evaluation backend (HF or vLLM).

Import the submodule you need (nothing is imported here, so ``import museg.generation.vllm`` does
not pull in the HF stack twice and never imports vllm itself)::

    from museg.generation.seeded import sample_completions
    roll = sample_completions(model, processor, [inputs] * 2, seeds=[1, 2], max_new_tokens=64)

Where to add a rollout backend: a callable with the signature of ``generate_completions`` plus
``prompt_text`` / ``video`` / ``seeds`` keywords (see ``VLLMRollout``), chosen in the trainer by
``rollout.backend``; an evaluation backend: a class with ``name``, ``model_path`` and
``generate(questions, videos)``, added to ``make_backend``.
"""
