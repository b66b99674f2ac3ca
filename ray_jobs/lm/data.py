"""The training text, tokenised into fixed-length blocks, and the order of blocks.

Blocks come from raw text (below) or from a token dataset that prepare.py wrote
(`--data`: kind "tokens", mlcore.prepared): its train and val splits' blocks in
shard order, read whole by every rank (2 bytes a token), each shard checked
against its SHA-256 as it is read. The driver verifies the whole dataset first.

The default corpus is the Python standard library's own source files: present on
every machine with Python, nothing to download. A text folder (local, or
s3://bucket/prefix, copied down first) works the same way. Documents are taken in
sorted order up to `max_bytes`; each goes to the validation split when the CRC-32
of its name says so, so the split never depends on the machine or the run.

Blocks are `seq_len + 1` tokens (inputs and next-token targets) cut from each
split's token stream. The order is a permutation per epoch from the seed, and
step `s` of an epoch takes a fixed slice of it for the whole global batch, each
rank a stride of that slice: the same global batches at any world size, so a
resumed run at another size sees exactly the batches it had not yet seen.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lm.tokenizer import EOT
from mlcore import prepared as prep
from mlcore.errors import DataError, DatasetUnavailable, JobInputError

STDLIB = "stdlib"
TEXT_SUFFIXES = {".py", ".txt", ".md", ".rst", ".json", ".toml", ".cfg", ".html"}
DEFAULT_MAX_BYTES = 16 << 20


@dataclass(frozen=True)
class Document:
    name: str  # path relative to the corpus root: what the split is decided on
    path: str
    size: int  # bytes taken (the last document may be cut to fit max_bytes)


def _stdlib_files() -> tuple[Path, list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "__pycache__", "dist-packages"}
    files = [
        p
        for p in root.rglob("*.py")
        if not skip.intersection(p.relative_to(root).parts) and p.is_file()
    ]
    return root, files


def _folder_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]


def plan_corpus(source: str, max_bytes: int, cache_dir: str | None = None):
    """The documents of `source` ("stdlib", a folder, or s3://...), in sorted
    order up to `max_bytes`, without reading them (their sizes come from stat)."""
    if source == STDLIB:
        root, files = _stdlib_files()
    else:
        from mlcore.storage import is_remote_uri

        if is_remote_uri(source):
            from mlcore.storage import download_dir, parse_storage

            local = cache_dir or tempfile.mkdtemp(prefix="rg-corpus-")
            source = download_dir(parse_storage(source, "--data-dir"), local)
        root = Path(os.path.expanduser(source))
        if not root.is_dir():
            raise DatasetUnavailable(f"--data-dir {source} is not a folder")
        files = _folder_files(root)
    docs, total = [], 0
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        size = min(path.stat().st_size, max_bytes - total)
        if size <= 0:
            if total >= max_bytes:
                break
            continue
        docs.append(Document(path.relative_to(root).as_posix(), str(path), size))
        total += size
    if not docs:
        kinds = ", ".join(sorted(TEXT_SUFFIXES))
        raise DatasetUnavailable(f"--data-dir {source} holds no text files ({kinds})")
    return docs


def is_validation(name: str, val_percent: int) -> bool:
    return zlib.crc32(name.encode()) % 100 < val_percent


def split_documents(docs: list[Document], val_percent: int):
    """(train, val) documents; each split gets at least one when there are two."""
    val = [d for d in docs if is_validation(d.name, val_percent)]
    train = [d for d in docs if not is_validation(d.name, val_percent)]
    if len(docs) >= 2 and not val:
        val, train = train[-1:], train[:-1]
    if len(docs) >= 2 and not train:
        train, val = val[:1], val[1:]
    return train, val


def num_blocks(docs: list[Document], seq_len: int) -> int:
    """Blocks of seq_len + 1 tokens the documents give (each ends with EOT)."""
    tokens = sum(d.size + 1 for d in docs)
    return max(0, (tokens - 1) // seq_len)


def _tokens(docs: list[Document]) -> np.ndarray:
    parts = []
    for d in docs:
        with open(d.path, "rb") as f:
            data = f.read(d.size)
        parts.append(np.frombuffer(data, dtype=np.uint8).astype(np.int16))
        parts.append(np.array([EOT], dtype=np.int16))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def to_blocks(tokens: np.ndarray, seq_len: int) -> torch.Tensor:
    """(n, seq_len + 1) int16 blocks; consecutive blocks share one boundary token."""
    n = max(0, (len(tokens) - 1) // seq_len)
    t = torch.from_numpy(np.ascontiguousarray(tokens[: n * seq_len + 1]))
    if n == 0:
        return torch.zeros(0, seq_len + 1, dtype=torch.int16)
    return t.unfold(0, seq_len + 1, seq_len).clone()


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # (n, seq_len + 1) int16
    val: torch.Tensor
    fingerprint: str  # SHA-256 of the documents' names and bytes, and seq_len
    documents: int


def load_corpus(
    source: str,
    seq_len: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    val_percent: int = 5,
) -> Corpus:
    docs = plan_corpus(source, max_bytes)
    train_docs, val_docs = split_documents(docs, val_percent)
    train_tokens, val_tokens = _tokens(train_docs), _tokens(val_docs)
    h = hashlib.sha256(f"seq_len={seq_len}".encode())
    for d in docs:
        h.update(d.name.encode() + b"\0" + str(d.size).encode())
    h.update(train_tokens.tobytes())
    h.update(val_tokens.tobytes())
    return Corpus(
        train=to_blocks(train_tokens, seq_len),
        val=to_blocks(val_tokens, seq_len),
        fingerprint=h.hexdigest(),
        documents=len(docs),
    )


def open_tokens(uri: str, seq_len: int, vocab_size: int) -> prep.Prepared:
    """The prepared dataset at `uri` (manifest read, shards not yet checked),
    once it is one this model can train on: kind "tokens", blocks of exactly
    seq_len + 1 tokens, byte tokens within the vocabulary."""
    data = prep.open_prepared(uri, "--data")
    where = f"{data.root.uri}/{prep.MANIFEST}"
    if data.kind != "tokens":
        raise JobInputError(
            "--data",
            f"{where} is a {data.kind} dataset; --model gpt trains on a token "
            "dataset (prepare.py --format text)",
        )
    tokens = data.manifest.get("tokens", {})
    block = int(tokens.get("block", 0))
    if block != seq_len + 1:
        raise JobInputError(
            "--context",
            f"{where} holds blocks of {block} tokens (prepare.py --seq-len "
            f"{block - 1}); this run's --context {seq_len} needs blocks of "
            f"{seq_len + 1}: train with --context {block - 1}, or prepare the text "
            f"again with --seq-len {seq_len}",
        )
    vocab, eot = int(tokens.get("vocab_size", 0)), tokens.get("eot")
    if tokens.get("tokenizer") != "bytes" or vocab > vocab_size or eot != EOT:
        raise JobInputError(
            "--data",
            f"{where} has tokenizer {tokens.get('tokenizer')!r} with {vocab} ids "
            f"and end-of-text {eot}; the model reads bytes with end-of-text {EOT} "
            f"in a vocabulary of {vocab_size}",
        )
    return data


def verify_tokens(
    uri: str, config, seq_len: int, batch_size: int, num_workers: int
) -> prep.Prepared:
    """The driver's check before any worker starts: the dataset fits the run
    (open_tokens, the batch and the workers), then every train and val shard
    has the manifest's schema, rows and SHA-256 (mlcore.prepared.verify)."""
    data = open_tokens(uri, seq_len, config.vocab_size)
    train, val = data.rows("train"), data.rows("val")
    if train < batch_size:
        raise JobInputError(
            "--batch-size",
            f"the global batch ({batch_size} blocks) is larger than the training "
            f"split of {data.root.uri} ({train} blocks); lower it or prepare more "
            "text",
        )
    if val < num_workers:
        raise JobInputError(
            "--data",
            f"the validation split of {data.root.uri} has {val} blocks, fewer than "
            f"the {num_workers} workers; prepare it with a larger --val-fraction",
        )
    started = time.monotonic()
    prep.verify(data, splits=("train", "val"))
    shards = len(data.shards("train")) + len(data.shards("val"))
    print(
        f"[raygpu] verified {data.root.uri}: {train} train and {val} val blocks of "
        f"{seq_len + 1} tokens in {shards} shard(s), manifest sha256 "
        f"{data.digest[:12]} ({time.monotonic() - started:.1f}s)"
    )
    return data


def _read_blocks(data: prep.Prepared, split: str, vocab_size: int) -> torch.Tensor:
    block = int(data.manifest["tokens"]["block"])
    expected = prep.schema_dict(data.schema())
    parts = [np.zeros((0, block), dtype=np.int16)]
    for shard in data.shards(split):
        target = data.root.join(shard["path"])
        try:
            with target.filesystem.open_input_stream(
                target.path, compression=None
            ) as f:
                raw = f.read()
        except OSError as exc:
            raise DataError(f"shard {target.uri} cannot be read: {exc}") from None
        if prep.sha256_bytes(raw) != shard["sha256"]:
            raise DataError(
                f"shard {target.uri} does not match its checksum in {prep.MANIFEST}"
            )
        table = pq.read_table(pa.BufferReader(raw))
        found = prep.schema_dict(table.schema)
        if found != expected or table.num_rows != shard["rows"]:
            raise DataError(
                f"shard {target.uri} has columns {found} and {table.num_rows} rows; "
                f"the manifest says {expected} and {shard['rows']}"
            )
        flat = table.column("tokens").combine_chunks().flatten().to_numpy()
        if len(flat) and (flat.min() < 0 or flat.max() >= vocab_size):
            raise DataError(f"shard {target.uri} holds ids outside 0-{vocab_size - 1}")
        parts.append(flat.astype(np.int16).reshape(-1, block))
    return torch.from_numpy(np.concatenate(parts))


def load_prepared(
    uri: str, seq_len: int, vocab_size: int, digest: str | None = None
) -> Corpus:
    """The train and val blocks of a prepared token dataset; with `digest` (the
    driver's verified manifest) a manifest changed since is refused."""
    data = open_tokens(uri, seq_len, vocab_size)
    if digest is not None and data.digest != digest:
        raise DataError(
            f"{data.root.uri}/{prep.MANIFEST} changed since the driver verified it "
            f"(sha256 {digest[:12]} then, {data.digest[:12]} now)"
        )
    documents = data.manifest["tokens"].get("documents", {})
    return Corpus(
        train=_read_blocks(data, "train", vocab_size),
        val=_read_blocks(data, "val", vocab_size),
        fingerprint=data.digest,
        documents=int(documents.get("train", 0)) + int(documents.get("val", 0)),
    )


def corpus_for(cfg: dict, vocab_size: int) -> Corpus:
    """The blocks a training run's config names: prepared, or raw text."""
    seq_len = int(cfg["seq_len"])
    if cfg.get("data"):
        data = cfg["data"]
        return load_prepared(data["uri"], seq_len, vocab_size, data.get("digest"))
    return load_corpus(
        cfg["data_source"], seq_len, cfg["corpus_bytes"], cfg["val_percent"]
    )


class BatchOrder:
    """Which blocks make global step `step` of `epoch`, and each rank's share."""

    def __init__(self, num_blocks: int, global_batch: int, seed: int):
        if global_batch > num_blocks:
            raise JobInputError(
                "--batch-size",
                f"the global batch ({global_batch} blocks) is larger than the "
                f"training split ({num_blocks} blocks); lower it, or raise "
                "--corpus-bytes or shorten --context",
            )
        self.num_blocks, self.global_batch, self.seed = num_blocks, global_batch, seed
        self.steps_per_epoch = num_blocks // global_batch
        self._epoch, self._perm = -1, None

    def global_indices(self, epoch: int, step: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = (
                torch.randperm(self.num_blocks, generator=g),
                epoch,
            )
        b = self.global_batch
        return self._perm[step * b : (step + 1) * b]

    def rank_indices(
        self, epoch: int, step: int, rank: int, world: int
    ) -> torch.Tensor:
        return self.global_indices(epoch, step)[rank::world]

    def position(self, global_step: int) -> tuple[int, int]:
        """(epoch, step within it) of the `global_step`-th step from the start."""
        return divmod(global_step, self.steps_per_epoch)


def batch(blocks: torch.Tensor, indices: torch.Tensor, device) -> tuple:
    """(inputs, targets) as int64 on `device`."""
    b = blocks[indices].to(device=device, dtype=torch.long)
    return b[:, :-1], b[:, 1:]
