"""Versioned prompt for GeCo text views: one meaning-preserving paraphrase and one minimal hard negative.

Bump ``PROMPT_VERSION`` whenever the wording changes; it is part of the generation cache key.
"""

from __future__ import annotations

PROMPT_VERSION = "paraphrase-v1"

SYSTEM_PROMPT = (
    "You write alternative captions for images. You never describe anything that the caption does not state."
)

USER_TEMPLATE = """Original caption: {caption}

Write two new captions for the same image.

Positive: says exactly what the original says in other words. Keep every object, attribute, number and \
relation. You may use synonyms, reorder clauses, or turn active voice into passive voice.

Negative: changes as few words as possible so that the caption becomes false for the image but still \
sounds natural. Good changes swap which object does what, change a spatial relation (left/right, \
above/below, inside/outside), or change one colour, size or count.

Example
Original caption: a brown dog carries a red ball across the lawn
Positive: across the lawn, a red ball is carried by a brown dog
Negative: a red dog carries a brown ball across the lawn

Reply with two lines only, the first starting with "Positive:" and the second with "Negative:"."""

POSITIVE_PREFIX = "Positive:"
NEGATIVE_PREFIX = "Negative:"


def build_messages(caption: str) -> list[dict[str, str]]:
    """Return the chat messages that ask for both views of ``caption``."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_TEMPLATE.format(caption=caption)},
    ]
