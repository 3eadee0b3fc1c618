"""Tokenisation with the model's own ``tokenizer.json`` (Hugging Face ``tokenizers``).

The file's own truncation and padding settings are replaced: MiniLM's says "truncate
to 128, pad everything to 128", while the model is used at up to 256 tokens and padding
is never computed here (sequences are packed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from noa.builtin_plugins.inference.errors import InputTooLong, ModelLoadError

__all__ = ["TextTokenizer", "Tokenized"]


class Tokenized(msgspec.Struct, frozen=True):
    """One text's token ids, after truncation to the model's maximum length."""

    ids: list[int]
    truncated: bool = False


class TextTokenizer:
    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self._tokenizer = tokenizer
        self.max_length = max_length
        encode = getattr(tokenizer, "encode_batch_fast", None)  # no offsets: faster
        self._encode_batch = encode or tokenizer.encode_batch
        self._untruncated: Any = None

    @classmethod
    def load(cls, model_dir: Path, *, name: str, max_length: int) -> TextTokenizer:
        from tokenizers import Tokenizer

        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(name, f"{path} is missing")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception
            raise ModelLoadError(name, f"{path} is not a usable tokenizer: {exc}") from None
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)
        return cls(tokenizer, max_length)

    def encode(
        self, texts: Sequence[str], *, truncate: bool, param: str = "input"
    ) -> list[Tokenized]:
        """Token ids for each text; a text over the limit is cut to it when ``truncate``,
        else refused with :class:`InputTooLong` naming its index."""
        encodings = self._encode_batch(list(texts))
        out: list[Tokenized] = []
        for index, encoding in enumerate(encodings):
            cut = bool(encoding.overflowing)
            if cut and not truncate:
                raise InputTooLong(index, self.max_length, param)
            out.append(Tokenized(encoding.ids, cut))
        return out

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The character span of every token of ``text`` (special tokens left out, no
        truncation): what chunking by tokens measures."""
        if self._untruncated is None:
            from tokenizers import Tokenizer

            copy = Tokenizer.from_str(self._tokenizer.to_str())
            copy.no_truncation()
            self._untruncated = copy
        offsets: list[tuple[int, int]] = self._untruncated.encode(
            text, add_special_tokens=False
        ).offsets
        return offsets
