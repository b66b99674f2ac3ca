"""Byte-level tokenizer: token ids 0-255 are the UTF-8 bytes, 256 ends a document.

Nothing to download or train, every text round-trips, and any machine tokenises
the same text to the same ids. The model's vocabulary is padded to a multiple of
64 (faster matmuls); the padding ids never occur in data.
"""

from __future__ import annotations

EOT = 256  # end of text: separates documents in the token stream
VOCAB_SIZE = 320  # 257 ids in use, padded


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def encode_document(data: bytes) -> list[int]:
    """A document's bytes as ids, followed by EOT."""
    return [*data, EOT]


def decode(ids) -> str:
    """Text of `ids`; EOT becomes a newline, padding ids and broken UTF-8 are
    replaced rather than raised on (a sampled sequence can hold either)."""
    out = bytearray()
    for i in ids:
        i = int(i)
        if i < 256:
            out.append(i)
        elif i == EOT:
            out.extend(b"\n")
        else:
            out.extend("\ufffd".encode())
    return out.decode("utf-8", errors="replace")
