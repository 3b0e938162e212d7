"""The miniature LLaVA-NeXT: transformers' own `LlavaNextForConditionalGeneration` and
`LlavaNextProcessor` with the real model's layout rules (a base image plus an anyres grid from
pinpoints, unpadding, one newline token per grid row, vision layer -2, the 'default' strategy) on
112-pixel tiles of 14-pixel patches: 64 base tokens, and LLaVA-NeXT-8B's pinpoints scaled by 1/3.
"""

from __future__ import annotations

from mrpruner.mini.data import ANSWERS, PINPOINTS, TASKS, TILE, TOPICS, check_task

def vocabulary(task: str = "marks") -> list[str]:
    """The tokenizer's words (after the special tokens): the roles, every word of `task`'s questions
    and answers."""
    words = ["user", "assistant", "system"]
    for topic in TASKS[check_task(task)]:
        words += TOPICS[topic][1].split()
    for topic in TASKS[task]:
        words += list(ANSWERS[topic])
    return list(dict.fromkeys(words))


def processor(task: str = "marks"):
    """The miniature's `LlavaNextProcessor` for `task` (`mrpruner.testing.offline_processor`): a
    WordLevel tokenizer over `vocabulary(task)` and LLaVA-NeXT's image processor on 112-pixel tiles."""
    from mrpruner.testing import offline_processor

    return offline_processor(vocabulary(task), tile=TILE, pinpoints=PINPOINTS)


def config(tokenizer):
    """The miniature's `LlavaNextConfig`: CLIP 112/14 (hidden 128, 3 layers, feature layer -2),
    a gelu projector and a Llama (hidden 128, 4 layers, 4 heads over 2 KV heads)."""
    from mrpruner.testing import small_llava_next_config

    return small_llava_next_config(tokenizer, hidden=128, intermediate=256, layers=4, heads=4, kv_heads=2,
                                   vision=(128, 256, 3, 4), tile=TILE, pinpoints=PINPOINTS, rope_theta=10000.0,
                                   max_positions=1024)


def new_model(proc, seed: int = 0):
    """A freshly initialised miniature (seeded; the global RNG is left untouched)."""
    from mrpruner.testing import random_llava_next

    return random_llava_next(config(proc.tokenizer), seed=seed)
