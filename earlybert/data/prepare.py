"""Pretraining text prepared once: tokenized by several processes into one memory-mapped token file per corpus
and tokenizer, which every rank and every later run reads without tokenizing again.

The file is the whole corpus as one token stream, a [SEP] after each document; a block of any length L is
[CLS] + the next L-2 tokens + [SEP], cut on access, so phases with other sequence lengths share the file.
Memory stays flat in corpus size: documents are read lazily, tokenized a window of chunks at a time, and
appended to disk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earlybert.data.corpus import DataConfig, cache_lock, document_separator, document_stream
from earlybert.errors import EarlyBertError

PREPARED_VERSION = "tokens/1"
CHUNK_BYTES = 1 << 20
"""Text per task handed to a tokenizing process (whole documents, about this many characters)."""
SAMPLED_READS = 16
"""Evenly spaced 64 KiB reads per file that, with its size and modification time, identify its content."""


def _file_identity(path: Path) -> str:
    stat = path.stat()
    h = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    with open(path, "rb") as f:
        for i in range(SAMPLED_READS):
            f.seek(stat.st_size * i // SAMPLED_READS)
            h.update(f.read(65536))
    return h.hexdigest()


def corpus_key(cfg: DataConfig) -> str:
    """The corpus's identity without reading all of it: each file's path, size, modification time and sampled
    bytes (or the dataset's name, config, split and column), plus the document limit."""
    h = hashlib.sha256(f"{PREPARED_VERSION}|{cfg.max_documents}".encode())
    for name in cfg.files():
        path = Path(name).expanduser()
        if not path.is_file():
            raise EarlyBertError(f"corpus file {path} does not exist: set data.train_files to existing text files")
        h.update(_file_identity(path).encode())
    if not cfg.files():
        local = Path(cfg.dataset).expanduser()
        h.update(f"{cfg.dataset}|{cfg.dataset_config}|{cfg.dataset_split}|{cfg.text_column}".encode())
        if local.is_file():
            h.update(_file_identity(local).encode())
    return h.hexdigest()[:20]


def tokenizer_key(tokenizer) -> str:
    """Hash of the tokenizer's whole definition (vocabulary, normalizer, pre-tokenizer)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


class PackedBlocks:
    """Blocks of `seq_len` tokens cut from the prepared stream when indexed (nothing is copied up front): framed as
    [CLS] ... [SEP] for masked LM, or plain runs of the stream (documents split by their separator) for causal LM."""

    def __init__(self, tokens: np.ndarray, seq_len: int, cls_id: int | None, sep_id: int | None):
        if seq_len < 8:
            raise EarlyBertError(f"data.seq_len={seq_len} is too short: use at least 8")
        self.tokens, self.seq_len, self.cls_id, self.sep_id = tokens, seq_len, cls_id, sep_id
        self.framed = cls_id is not None
        self.body = seq_len - 2 if self.framed else seq_len
        self.count = len(tokens) // self.body
        if self.count == 0:
            raise EarlyBertError(f"the corpus has {len(tokens)} tokens, fewer than one block of {seq_len}: "
                                 "give more text or a smaller seq_len")

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, ids) -> np.ndarray:
        """Blocks by index: an int, a slice or an array of indices."""
        if isinstance(ids, slice):
            ids = range(*ids.indices(self.count))
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        out = np.empty((len(ids), self.seq_len), dtype=np.int32)
        first = 1 if self.framed else 0
        if self.framed:
            out[:, 0], out[:, -1] = self.cls_id, self.sep_id
        for row, i in enumerate(ids):
            out[row, first:first + self.body] = self.tokens[i * self.body:(i + 1) * self.body]
        return out


@dataclass
class PreparedCorpus:
    """A prepared token stream (memory-mapped read-only) and what it was made from."""

    folder: Path
    tokens: np.ndarray
    meta: dict

    @classmethod
    def open(cls, folder: Path) -> PreparedCorpus:
        meta = json.loads((folder / "meta.json").read_text())
        tokens = np.memmap(folder / "tokens.u32", dtype=np.uint32, mode="r", shape=(meta["tokens"],))
        return cls(folder, tokens, meta)

    def blocks(self, seq_len: int, tokenizer, framed: bool = True) -> PackedBlocks:
        """Blocks of `seq_len`: [CLS] ... [SEP] when `framed` (masked LM), else plain (causal LM)."""
        if not framed:
            return PackedBlocks(self.tokens, seq_len, None, None)
        return PackedBlocks(self.tokens, seq_len, tokenizer.cls_token_id, tokenizer.sep_token_id)


# ---- tokenizing processes -----------------------------------------------------------------------
_worker: dict = {}


def _start_worker(tokenizer_json: str, sep_id: int) -> None:
    from tokenizers import Tokenizer

    _worker["tokenizer"], _worker["sep"] = Tokenizer.from_str(tokenizer_json), sep_id


def _encode(docs: list[str]) -> tuple[np.ndarray, int]:
    """One chunk of documents as token ids, [SEP] after each, and its size in UTF-8 bytes."""
    ids: list[int] = []
    sep = _worker["sep"]
    for encoding in _worker["tokenizer"].encode_batch(docs, add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(sep)
    return np.asarray(ids, dtype=np.uint32), sum(len(d.encode()) for d in docs)


def _chunks(docs: Iterator[str]) -> Iterator[list[str]]:
    chunk, size = [], 0
    for doc in docs:
        chunk.append(doc)
        size += len(doc)
        if size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _tokenize_to(path: Path, docs: Iterator[str], tokenizer, num_proc: int, progress: bool) -> dict:
    """Write the token stream of `docs` to `path`; returns counts and throughput."""
    from tqdm.auto import tqdm

    args = (tokenizer.backend_tokenizer.to_str(), document_separator(tokenizer))
    started, tokens, documents, text_bytes = time.perf_counter(), 0, 0, 0
    bar = tqdm(desc="tokenizing", unit=" docs", disable=not progress, file=sys.stderr)
    pool = None
    if num_proc > 1:  # fork: workers need only the tokenizer, passed as JSON; they stay single-threaded
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        pool = multiprocessing.get_context("fork").Pool(num_proc, _start_worker, args)
    else:
        _start_worker(*args)
    try:
        with open(path, "wb") as out:
            chunks = _chunks(docs)
            # A bounded window of chunks at a time keeps memory flat whatever the corpus size.
            while window := list(itertools.islice(chunks, max(1, num_proc) * 4)):
                for ids, size in (pool.imap(_encode, window) if pool else map(_encode, window)):
                    out.write(ids.tobytes())
                    tokens, text_bytes = tokens + len(ids), text_bytes + size
                documents += sum(map(len, window))
                bar.update(sum(map(len, window)))
            out.flush()
            os.fsync(out.fileno())
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    seconds = time.perf_counter() - started
    return {"documents": documents, "tokens": tokens, "text_mb": text_bytes / 1e6, "seconds": round(seconds, 3),
            "mb_per_s": round(text_bytes / 1e6 / max(seconds, 1e-9), 3), "num_proc": max(1, num_proc)}


def check_cache_dir(cache_dir: str) -> Path:
    """The cache folder, created if needed; a one-line error when it cannot be written."""
    folder = Path(cache_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EarlyBertError(f"data.cache_dir {folder} cannot be created ({e.strerror}): set data.cache_dir to a "
                             "writable folder") from None
    try:  # a real write: permission bits say nothing for root or on read-only and pseudo file systems
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise EarlyBertError(f"data.cache_dir {folder} is not writable ({e.strerror}): set data.cache_dir to a "
                             "writable folder (prepared data is written there once, then only read)") from None
    return folder


def check_prepared(corpus: PreparedCorpus, cfg: DataConfig, tokenizer) -> None:
    """Refuse a prepared folder made from other text or with another tokenizer."""
    if corpus.meta["tokenizer_key"] != tokenizer_key(tokenizer):
        raise EarlyBertError(f"{corpus.folder} was prepared with another tokenizer: prepare again with this run's "
                             "tokenizer (earlybert prepare with the same data.tokenizer), or use that tokenizer")
    if (cfg.files() or cfg.dataset) and corpus.meta["corpus_key"] != corpus_key(cfg):
        raise EarlyBertError(f"the corpus changed since {corpus.folder} was prepared (a file's size, time or content "
                             "differs): prepare it again with earlybert prepare, or restore the files")


def prepare(cfg: DataConfig, tokenizer, log=print, progress: bool = False) -> PreparedCorpus:
    """The prepared token stream of `cfg`'s corpus: from the cache, else tokenized now by one process while
    any others (ranks, runs) wait on the cache lock and then read the same file."""
    if cfg.prepared:
        folder = Path(cfg.prepared).expanduser()
        if not (folder / "meta.json").is_file():
            raise EarlyBertError(f"data.prepared={folder} holds no prepared corpus (meta.json): run earlybert prepare "
                                 "--config FILE first, or leave data.prepared empty")
        corpus = PreparedCorpus.open(folder)
        check_prepared(corpus, cfg, tokenizer)
        return corpus
    corpus_id, tokenizer_id = corpus_key(cfg), tokenizer_key(tokenizer)
    key = f"prepared-{corpus_id}-{tokenizer_id}"
    cache = check_cache_dir(cfg.cache_dir)
    folder = cache / key
    with cache_lock(cache):
        if (folder / "meta.json").is_file():
            log(f"data: found the prepared corpus {folder.name} in the cache: no tokenization")
            return PreparedCorpus.open(folder)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{key}-"))
        try:
            num_proc = cfg.num_proc or os.cpu_count() or 1
            stats = _tokenize_to(tmp / "tokens.u32", document_stream(cfg), tokenizer, num_proc, progress)
            meta = {"version": PREPARED_VERSION, "corpus_key": corpus_id, "tokenizer_key": tokenizer_id,
                    "sources": cfg.files() or [cfg.dataset], **stats}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    blocks = meta["tokens"] // max(1, cfg.seq_len - 2)
    log(f"data: prepared {meta['documents']} documents, {meta['tokens']} tokens ({blocks} blocks of {cfg.seq_len}), "
        f"{meta['text_mb']:.1f} MB in {meta['seconds']:.1f} s ({meta['mb_per_s']:.2f} MB/s, {meta['num_proc']} "
        f"processes) -> {folder}")
    return PreparedCorpus.open(folder)
