"""Offline byte-level BPE tokenizer for the tiny Qwen2.5-VL, with Qwen's special tokens and template.

Trains a small BPE (``tokenizers`` library) on a synthetic, seed-determined corpus of grounding
prompts, timestamps and ``<think>/<answer>`` tags, with the same normalizer, pre-tokenizer
(Qwen2's split regex + byte-level) and decoder as Qwen2, then appends Qwen2.5-VL's special tokens in
Qwen's order (``<|endoftext|>`` first, ``<|video_pad|>`` last). Wraps it as a transformers
``Qwen2Tokenizer`` with ``CHAT_TEMPLATE``, a Qwen-style chat template written here.

Example::

    >>> tok = build_tokenizer(seed=0)
    >>> tok.convert_tokens_to_ids("<|video_pad|>") == len(tok) - 1
    True
    >>> text = "<answer>1.20-3.40</answer>"
    >>> tok.decode(tok(text)["input_ids"]) == text
    True
"""

from __future__ import annotations

import random

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

#: Qwen2.5-VL special tokens, in the order of their ids in the real vocabulary.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

#: Qwen-style chat template: a default system turn when none is given, ``<|im_start|>role\n...``
#: turns closed by ``<|im_end|>\n``, video/image content items rendered as vision placeholders.
CHAT_TEMPLATE = r"""
{%- if messages | length == 0 or messages[0]['role'] != 'system' -%}
{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] + '\n' -}}
{%- if message['content'] is string -%}
{{- message['content'] -}}
{%- else -%}
{%- for item in message['content'] -%}
{%- if item['type'] == 'video' or 'video' in item -%}
{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
{%- elif item['type'] == 'image' or 'image' in item -%}
{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif item['type'] == 'text' -%}
{{- item['text'] -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- endif -%}
""".strip()

_WORDS = (
    "the a an of to in on at and or with from for by is are was were be this that these those it "
    "person man woman people someone they he she his her their video clip scene frame moment segment "
    "segments event events action actions activity time times second seconds start end begins ends "
    "find locate give output answer question query sentence description described happens occur "
    "occurs occurrence occurrences every each all first then after before during while when where "
    "which what how please provide reasoning process think thinking specific timestamps timestamp "
    "refer refers referring between s open opens close closes door window table chair cup phone book "
    "walks walking runs running sits sitting stands standing holds holding takes taking puts putting "
    "eats eating drinks drinking plays playing throws throwing jumps jumping cooks cooking washing "
    "dishes laptop laughing smiling talking dancing swimming riding bike ball basketball soccer tennis "
    "cricket shot pole vault long jump high diving golf swing billiards volleyball spike bowling "
    "grounding temporal multiple format enclose tags within inside inclusive exclusive duration total "
    "seconds. minutes hour number numbers decimal decimals yes no true false none system user assistant "
    "first work through point moments say happens there final write one more separated spaces "
    "example citing rely following exactly asks"
).split()

_SENTENCES = (
    "You are a helpful assistant.",
    "Give the query: '{q}', when does the described content occur in the video?",
    "Find every segment of the video where the action '{q}' happens.",
    "Output your thought process within the <think> </think> tags, including analysis with "
    "specific timestamps (xx.xx) or time ranges (xx.xx-xx.xx).",
    "Then, provide the start and end times (in seconds, precise to two decimal places) in the "
    "format 'start time-end time' within the <answer> </answer> tags.",
    "For example: <answer>12.54-17.83</answer>.",
    "Please think about this question as if you were a human pondering deeply.",
    "First work through the question inside <think></think>, citing timestamps in seconds.",
    "Then write the final answer inside <answer></answer>: one or more segments, each as "
    "'start-end' in seconds with two decimals, separated by spaces.",
)


def _stamp(rng: random.Random) -> str:
    return f"{rng.uniform(0, 200):.2f}"


def _segment(rng: random.Random) -> str:
    a = rng.uniform(0, 180)
    return f"{a:.2f}-{a + rng.uniform(0.5, 40):.2f}"


def training_corpus(seed: int = 0, lines: int = 3000) -> list[str]:
    """Deterministic synthetic corpus (prompts, timestamps, think/answer completions).

    >>> training_corpus(0, 4) == training_corpus(0, 4)
    True
    """
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(lines):
        q = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 8)))
        kind = i % 4
        if kind == 0:
            out.append(rng.choice(_SENTENCES).replace("{q}", q))
        elif kind == 1:
            segs = " ".join(_segment(rng) for _ in range(rng.randint(1, 4)))
            think = f"the {q} at {_stamp(rng)} and from {_segment(rng)}"
            out.append(f"<think>{think}</think>\n<answer>{segs}</answer>")
        elif kind == 2:
            out.append(f"{q}. {q.capitalize()} between {_stamp(rng)} and {_stamp(rng)} seconds.")
        else:
            out.append(" ".join(str(rng.randint(0, 9999)) for _ in range(6)) + " " + _segment(rng))
    return out


def _train_bpe(seed: int, vocab_size: int) -> Tokenizer:
    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training_corpus(seed), trainer=trainer)
    return tok


def build_tokenizer(seed: int = 0, vocab_size: int = 1024) -> Qwen2Tokenizer:
    """Train the tiny BPE and return a ``Qwen2Tokenizer`` with Qwen's specials and chat template.

    ``vocab_size`` counts the BPE tokens (>= 256 byte symbols); the 14 special tokens come after.
    """
    if vocab_size < 256 + 1:
        raise ValueError(f"vocab_size={vocab_size}: must exceed the 256 byte symbols (fix: >= 257)")
    bpe = _train_bpe(seed, vocab_size)
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok = Qwen2Tokenizer(
        tokenizer_object=bpe,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(SPECIAL_TOKENS[1:]),
        errors="replace",
        split_special_tokens=False,
        model_max_length=32768,
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
