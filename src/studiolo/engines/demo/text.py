"""Word-level tokenizer of the demo model: the caption grammar's words, everything else one unknown id.

No torch here: the engine tokenizes before it imports the network, and tests check the tokenizer alone.
"""

from __future__ import annotations

import re

PAD, BOS, UNK = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<bos>", "<unk>")
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words: "8-bit, Pixel-Art!" -> ["8", "bit", "pixel", "art"]."""
    return _WORD.findall(text.lower())


class Tokenizer:
    """Maps a prompt to ``max_tokens`` ids: BOS, the known words' ids (UNK for others), then PAD."""

    def __init__(self, vocab: list[str], max_tokens: int):
        self.vocab = list(vocab)
        self.max_tokens = max_tokens
        self._ids = {word: index + len(SPECIAL_TOKENS) for index, word in enumerate(self.vocab)}

    @property
    def size(self) -> int:
        return len(self.vocab) + len(SPECIAL_TOKENS)

    def encode(self, text: str, *, drop_unknown: bool = False) -> list[int]:
        """Token ids, always starting with BOS so an empty prompt (the unconditional branch) has one state.

        ``drop_unknown`` leaves out words outside the vocabulary instead of writing UNK: training captions
        never contain UNK, so its embedding is untrained noise; at generation time the model should simply
        ignore words it does not know ("a red square, trending on artstation" = "a red square").
        """
        known = (self._ids.get(word, UNK) for word in words(text))
        ids = [BOS] + [token for token in known if not (drop_unknown and token == UNK)]
        ids = ids[: self.max_tokens]
        return ids + [PAD] * (self.max_tokens - len(ids))
