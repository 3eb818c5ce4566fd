"""Tokenizer: text to token ids and back; characters: the sorted set of the corpus's characters is the vocabulary.

prepare.py makes it (once, for the corpus) and writes its state() into the token files' meta.json; train.py saves
that state in every checkpoint (data_info["tokenizer"]), and from_state() rebuilds the same tokenizer from it, so
sample.py encodes prompts exactly as training did.
"""

import numpy as np

KIND = "char"  # [data] tokenizer
SEPARATOR = "\n\n"  # between two documents of a corpus: a blank line


class Tokenizer:
    """Characters: each character of `vocab` (a string of sorted, distinct characters) is one token, its index."""

    kind = KIND

    def __init__(self, vocab: str) -> None:
        self.vocab, self.vocab_size = vocab, len(vocab)
        codes = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
        # code point -> id, -1 for those not in the vocabulary (the last entry stands for all code points past it)
        self.ids = np.full(int(codes.max(initial=0)) + 2, -1, dtype=np.int32)
        self.ids[codes] = np.arange(len(codes))

    def encode_array(self, text: str) -> np.ndarray:
        """The ids of `text` as an array: a table lookup, some 100 times faster than a Python loop."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = self.ids[np.minimum(codes, len(self.ids) - 1)]
        if (ids < 0).any():
            unknown = sorted({char for char in text if char not in self.vocab})
            raise ValueError("characters never seen in training: " + " ".join(map(repr, unknown)))
        return ids

    def encode(self, text: str) -> list[int]:
        """The ids of `text`; ValueError names the characters not in the vocabulary."""
        return self.encode_array(text).tolist()

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def state(self) -> dict:
        return {"kind": KIND, "vocab": self.vocab}


def from_state(state: dict) -> Tokenizer:
    """The tokenizer that state() describes."""
    check_kind(state)
    return Tokenizer(state["vocab"])


def check_kind(state: dict) -> None:
    """A clear error for a state of another kind of tokenizer (e.g. a checkpoint of the project before a regen)."""
    if state.get("kind") != KIND:
        raise SystemExit(
            f"the saved tokenizer is {state.get('kind')!r} but this project's is {KIND!r} ([data] tokenizer): use a "
            "checkpoint trained with this tokenizer, or set it back in ltgen.toml and run `ltgen regen`"
        )
