"""Instruction templates wrapped around a grounding question, and a helper that fills them.

Three templates (our own wording of the MUSEG recipe), each with exactly one ``{problem}``:

- ``STAGE1_TEMPLATE``: reason in ``<think></think>`` citing specific timestamps of the video, then
  answer ``<answer>s-e s-e</answer>`` (seconds, two decimals) -- the timestamp-aware stage 1;
- ``STAGE2_TEMPLATE``: the same without the timestamp demand (stage 2);
- ``ETBENCH_TEMPLATE``: reason with timestamps, then answer in the format the question asks for.

``build_question`` substitutes the problem by plain replacement, so braces inside a problem or a
user-supplied template never break it. ``template_from_cfg`` reads the template of a config node
(``cfg.stage`` or ``cfg.eval``): ``template_file`` if set (e.g. the instruction a released checkpoint
was trained with), else ``template`` (a name above or the text itself).

Example::

    from museg.data.prompts import TEMPLATES, build_question
    text = build_question(TEMPLATES["stage1"], "When does the red square appear?")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLACEHOLDER = "{problem}"

_ANSWER_FORMAT = (
    "Then write the final answer inside <answer></answer>: one or more segments, each as "
    "'start-end' in seconds with two decimals, separated by spaces, "
    "for example <answer>X.XX-X.XX X.XX-X.XX</answer>."
)

STAGE1_TEMPLATE = (
    "{problem}\n"
    "First work through the question inside <think></think>. While reasoning, point to specific "
    "moments of the video by their timestamps in seconds (for example 12.50) and say what happens "
    "there. " + _ANSWER_FORMAT
)

STAGE2_TEMPLATE = (
    "{problem}\n"
    "First work through the question inside <think></think>. " + _ANSWER_FORMAT
)

ETBENCH_TEMPLATE = (
    "{problem}\n"
    "First work through the question inside <think></think>, citing the timestamps (in seconds) of "
    "the moments of the video you rely on. Then write the final answer inside <answer></answer>, "
    "following exactly the answer format that the question asks for."
)

TEMPLATES: dict[str, str] = {
    "stage1": STAGE1_TEMPLATE,
    "stage2": STAGE2_TEMPLATE,
    "etbench": ETBENCH_TEMPLATE,
}


def build_question(template: str, problem: str) -> str:
    """Fill ``template``'s single ``{problem}`` placeholder with ``problem``.

    >>> build_question("Q: {problem} (answer in <answer></answer>)", "when {x}?")
    'Q: when {x}? (answer in <answer></answer>)'
    >>> build_question("no placeholder", "x")
    Traceback (most recent call last):
    ...
    ValueError: template must contain exactly one '{problem}' placeholder, found 0: 'no placeholder'
    """
    n = template.count(PLACEHOLDER)
    if n != 1:
        raise ValueError(
            f"template must contain exactly one '{{problem}}' placeholder, found {n}: {template[:60]!r}"
        )
    return template.replace(PLACEHOLDER, problem)


class TemplateError(ValueError):
    """A template file that is missing or has no single ``{problem}`` placeholder (one line)."""


def template_from_cfg(node: Any, key: str = "stage") -> str:
    """The template text of ``cfg.stage`` / ``cfg.eval``: ``template_file``, else ``template``.

    ``template`` may be a name in :data:`TEMPLATES` or the text itself; ``key`` names the node in
    error messages.

    >>> template_from_cfg({"template": "stage2", "template_file": None}) == STAGE2_TEMPLATE
    True
    >>> template_from_cfg({"template": "Q: {problem}", "template_file": None})
    'Q: {problem}'
    """
    path = node.get("template_file")
    if not path:
        text = str(node.get("template") or "")
        return TEMPLATES.get(text, text)
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise TemplateError(f"{key}.template_file: {p} does not exist (fix: point it at a text file "
                            f"holding the instruction with one {PLACEHOLDER})")
    text = p.read_text(encoding="utf-8")
    if text.count(PLACEHOLDER) != 1:
        raise TemplateError(f"{key}.template_file: {p} has {text.count(PLACEHOLDER)} "
                            f"{PLACEHOLDER} placeholders (fix: exactly one, where the question goes)")
    return text
