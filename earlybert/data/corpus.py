"""Pretraining data: read text, get a fast tokenizer, pack fixed-length blocks (cached), mask for MLM."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import itertools
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from earlybert.config import PathKind, Range
from earlybert.errors import EarlyBertError


@dataclass
class DataConfig:
    """Where the pretraining text comes from and how it becomes MLM batches."""

    train_files: Annotated[str | list[str], PathKind("file")] = field(default_factory=list)
    """Text files (plain or .gz, documents separated by blank lines): one path or a list."""
    dataset: str = ""
    """A `datasets` source (Hub name or local folder/file) read when train_files is empty."""
    dataset_config: str = ""
    """Configuration name of `dataset`, if it has several."""
    dataset_split: str = "train"
    """Split of `dataset` to read."""
    text_column: str = "text"
    """Column of `dataset` holding the text."""
    streaming: bool = False
    """Stream `dataset` instead of loading it whole (for corpora that do not fit in memory)."""
    max_documents: Annotated[int, Range(0)] = 0
    """Read at most this many documents (0: all)."""
    tokenizer: Annotated[str, PathKind("folder")] = ""
    """Tokenizer folder (fast tokenizer); empty: train a WordPiece vocabulary of model.vocab_size on the corpus."""
    seq_len: Annotated[int, Range(8)] = 128
    """Tokens per packed block, [CLS] and [SEP] included."""
    mlm_probability: Annotated[float, Range(0, 1, open_low=True, open_high=True)] = 0.15
    """Share of tokens chosen for prediction (80% [MASK], 10% random, 10% unchanged)."""
    nsp: bool = False
    """Add next-sentence prediction (BERT's original objective; BERT models only)."""
    cache_dir: str = "~/.cache/earlybert"
    """Where the corpus is prepared once (token file, trained tokenizer), keyed by the files and the tokenizer."""
    prepared: Annotated[str, PathKind("folder")] = ""
    """A folder written by `earlybert prepare` to read instead of looking in cache_dir (checked against the
    corpus and the tokenizer)."""
    num_proc: Annotated[int, Range(0)] = 0
    """Processes that tokenize the corpus when it is prepared (0: one per CPU core)."""
    tokenizer_sample_mb: Annotated[float, Range(0, open_low=True)] = 100.0
    """Megabytes of text, from the corpus's start, that a trained WordPiece vocabulary learns from."""

    def files(self) -> list[str]:
        return [self.train_files] if isinstance(self.train_files, str) else list(self.train_files)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_file_documents(paths: list[str]) -> Iterator[str]:
    """Documents from text files, split at blank lines, read lazily; a one-line error for a missing or
    non-UTF-8 file."""
    for name in paths:
        path = Path(name).expanduser()
        if not path.is_file():
            raise EarlyBertError(f"corpus file {path} does not exist: set data.train_files to existing text files")
        current: list[str] = []
        try:
            with _open_text(path) as f:
                for line in f:
                    if line.strip():
                        current.append(line.strip())
                    elif current:
                        yield " ".join(current)
                        current = []
        except UnicodeDecodeError:
            raise EarlyBertError(f"corpus file {path} is not UTF-8 text: convert it to UTF-8") from None
        except (OSError, EOFError) as e:
            raise EarlyBertError(f"corpus file {path} cannot be read ({e}): check the file") from None
        if current:
            yield " ".join(current)


def read_documents(paths: list[str], max_documents: int = 0) -> list[str]:
    """All documents of text files in a list (small corpora; pretraining streams them with `document_stream`)."""
    docs = list(itertools.islice(iter_file_documents(paths), max_documents or None))
    if not docs:
        raise EarlyBertError(f"the corpus {', '.join(paths)} holds no text: give files with documents in them")
    return docs


def iter_dataset_documents(cfg: DataConfig) -> Iterator[str]:
    """Documents from a `datasets` source (streamed when `cfg.streaming`)."""
    from datasets import load_dataset

    from earlybert.data.hub import load_hub_dataset

    source = cfg.dataset
    kwargs = {"split": cfg.dataset_split, "streaming": cfg.streaming}
    if Path(source).expanduser().is_file():  # a local text/json/csv/parquet file
        ext = Path(source).suffix.lstrip(".").replace("jsonl", "json").replace("txt", "text")
        ds = load_dataset(ext, data_files=str(Path(source).expanduser()), **kwargs)
    else:
        ds = load_hub_dataset(source, cfg.dataset_config or None, hint="check data.dataset, or give local files "
                              "with data.train_files (or a local file as data.dataset)", **kwargs)
    count = 0
    for row in ds:
        if cfg.text_column not in row:
            raise EarlyBertError(f"dataset {source} has no column {cfg.text_column!r}: set data.text_column")
        text = row[cfg.text_column]
        if text and text.strip():
            yield text.strip()
            count += 1
            if cfg.max_documents and count >= cfg.max_documents:
                return


def document_stream(cfg: DataConfig) -> Iterator[str]:
    """The configured corpus's documents, read lazily (files, else a `datasets` source), `max_documents` at most;
    a one-line error when there are none."""
    if cfg.files():
        docs, what = iter_file_documents(cfg.files()), ", ".join(cfg.files())
    elif cfg.dataset:
        docs, what = iter_dataset_documents(cfg), f"dataset {cfg.dataset} (column {cfg.text_column!r})"
    else:
        raise EarlyBertError("no corpus given: set data.train_files=PATH (or data.dataset=NAME)")
    count = 0
    for doc in itertools.islice(docs, cfg.max_documents or None):
        count += 1
        yield doc
    if count == 0:
        raise EarlyBertError(f"the corpus {what} holds no text: give files with documents in them")


def sample_documents(cfg: DataConfig, megabytes: float) -> list[str]:
    """The corpus's first documents, about `megabytes` of text (what a WordPiece vocabulary is trained on)."""
    budget, docs = megabytes * 1e6, []
    for doc in document_stream(cfg):
        docs.append(doc)
        budget -= len(doc)
        if budget <= 0:
            break
    return docs


def train_wordpiece(docs: Iterable[str], vocab_size: int, lowercase: bool = True):
    """A BERT-style WordPiece fast tokenizer trained on `docs`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(docs, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)


def cached_wordpiece(sample: Callable[[], list[str]], vocab_size: int, cache_dir: str, key: str):
    """A WordPiece trained on `sample()`, cached under `key` (the corpus and the sample size) and the vocabulary size.

    The `tokenizers` trainer breaks frequency ties in hash order, so two trainings on the same text
    can differ; reusing the cached one keeps ranks, reruns and resumed runs on one vocabulary.
    """
    h = hashlib.sha256(f"wordpiece/2:{vocab_size}:{key}".encode())
    folder = Path(cache_dir).expanduser() / f"tokenizer-{h.hexdigest()[:24]}"
    with cache_lock(folder.parent):  # one process trains; the others (ranks, runs) wait and load its result
        if (folder / "tokenizer.json").is_file():
            return load_tokenizer(str(folder))
        tokenizer = train_wordpiece(sample(), vocab_size)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tokenizer-"))
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, folder)
    return tokenizer


@contextmanager
def cache_lock(folder: Path):
    """Hold an exclusive lock on a cache folder (created if needed) across processes on this machine.

    Ranks start before their process group exists, so the lock is a file lock, not a barrier.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_tokenizer(path: str, gguf_file: str = ""):
    """A fast tokenizer from a folder (or a GGUF file in it), with a one-line error if it is missing or not fast."""
    from transformers import AutoTokenizer

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise EarlyBertError(f"tokenizer folder {path} does not exist: set data.tokenizer to a saved tokenizer")
    names = (gguf_file,) if gguf_file else ("tokenizer.json", "vocab.txt", "vocab.json")
    if not any((folder / name).is_file() for name in names):
        raise EarlyBertError(f"{path} holds no tokenizer files (tokenizer.json, vocab.txt or vocab.json): save the "
                             "tokenizer into it with tokenizer.save_pretrained(FOLDER)")
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError) as e:
        raise EarlyBertError(f"the tokenizer in {path} cannot be loaded ({str(e).splitlines()[0][:200]}): "
                             "save it again with tokenizer.save_pretrained(FOLDER)") from None
    if not tok.is_fast:
        raise EarlyBertError(f"tokenizer in {path} is not a fast tokenizer: save it with tokenizer.json")
    return tok


@dataclass
class BlockSampler:
    """Which blocks form each global batch: a fresh seeded permutation per epoch, fully determined by the step."""

    num_blocks: int
    global_batch: int
    seed: int
    lengths: np.ndarray | None = None
    """Given: group by length (each window of GROUP_BATCHES batches of the permutation ordered longest first)."""

    GROUP_BATCHES = 50

    def __post_init__(self):
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)
            if self.lengths is not None:  # batches of similar lengths, in a random order of windows
                window = self.GROUP_BATCHES * self.global_batch
                perm = np.concatenate([chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                                       for chunk in np.split(perm, range(window, len(perm), window))])
            self._perms = {epoch: perm}
        return self._perms[epoch]

    def sample_ids(self, step: int) -> np.ndarray:
        """Global sample numbers of a step (unique across epochs; used to seed masking)."""
        return np.arange(step * self.global_batch, (step + 1) * self.global_batch)

    def block_ids(self, sample_ids: np.ndarray) -> np.ndarray:
        """Block index of each global sample number."""
        return np.array([self._perm(int(k) // self.num_blocks)[int(k) % self.num_blocks] for k in sample_ids])


def sentence_pairs(blocks: np.ndarray, sample_ids: np.ndarray, tokenizer, seed: int):
    """Next-sentence pairs [CLS] A [SEP] B [SEP] from blocks, same length as the blocks.

    A is a random-length head of a block's text; B is what follows it (label 0) or, half of the time,
    the same span of the next sample in the batch (label 1). Decided per sample by (seed, its number).
    """
    n, seq_len = blocks.shape
    body = blocks[:, 1:-1]
    total = seq_len - 3
    ids = np.empty_like(blocks)
    types = np.zeros_like(blocks)
    labels = np.zeros(n, dtype=np.int64)
    for row, k in enumerate(sample_ids):
        rng = np.random.default_rng([seed, int(k), 1])
        cut = int(rng.integers(max(1, total // 4), max(2, 3 * total // 4)))
        other = (row + 1) % n
        random_next = n > 1 and rng.random() < 0.5
        second = body[other if random_next else row, cut:total]
        ids[row] = [tokenizer.cls_token_id, *body[row, :cut], tokenizer.sep_token_id, *second, tokenizer.sep_token_id]
        types[row, cut + 2:] = 1
        labels[row] = int(random_next)
    return ids, types, labels


def mask_tokens(
    blocks: np.ndarray, sample_ids: np.ndarray, tokenizer, probability: float, seed: int, vocab_size: int
) -> dict[str, torch.Tensor]:
    """Dynamic BERT masking: each sample's choice depends only on (seed, its global sample number).

    So one rank or many, and a resumed run, mask every sample identically.
    """
    input_ids = torch.from_numpy(blocks.astype(np.int64))
    labels = torch.full_like(input_ids, -100)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    for row, k in enumerate(sample_ids):
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(k))
        ids = input_ids[row]
        can = ~torch.isin(ids, special)
        chosen = (torch.rand(ids.shape, generator=gen) < probability) & can
        if not chosen.any():  # every sample predicts at least one token
            candidates = can.nonzero().flatten()
            chosen[candidates[torch.randint(len(candidates), (1,), generator=gen)]] = True
        labels[row][chosen] = ids[chosen]
        action = torch.rand(ids.shape, generator=gen)
        random_tokens = torch.randint(vocab_size, ids.shape, generator=gen)
        ids[chosen & (action < 0.8)] = tokenizer.mask_token_id
        swap = chosen & (action >= 0.8) & (action < 0.9)
        ids[swap] = random_tokens[swap]
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def document_separator(tokenizer) -> int:
    """The token written after every document: [SEP] (encoders), else end-of-sequence (decoders)."""
    separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if separator is None:
        raise EarlyBertError("the tokenizer has neither a separator nor an end-of-sequence token to put between "
                             "documents: use a tokenizer that defines sep_token or eos_token")
    return separator


class StreamingBlocks:
    """Packed blocks read in order from a document stream (corpora that do not fit in memory).

    Global sample k is the k-th block of the stream (wrapping around at its end), so every rank
    reads the stream and keeps its own samples, and a resumed run skips to where it stopped.
    """

    def __init__(self, documents, tokenizer, seq_len: int, framed: bool = True):
        self.documents, self.tokenizer, self.seq_len, self.framed = documents, tokenizer, seq_len, framed
        self._restart()

    def _restart(self) -> None:
        self._blocks = self._generate()
        self.position = 0  # number of the next block the generator yields
        self._epoch_start = 0

    def _generate(self):
        body = self.seq_len - 2 if self.framed else self.seq_len
        start, end = ([self.tokenizer.cls_token_id], [self.tokenizer.sep_token_id]) if self.framed else ([], [])
        separator, backend = document_separator(self.tokenizer), self.tokenizer.backend_tokenizer
        buffer: list[int] = []
        for doc in self.documents():
            buffer.extend(backend.encode(doc, add_special_tokens=False).ids)
            buffer.append(separator)
            while len(buffer) >= body:
                yield np.asarray([*start, *buffer[:body], *end], dtype=np.int32)
                buffer = buffer[body:]

    def take(self, sample_ids: np.ndarray) -> np.ndarray:
        """Blocks of increasing global sample numbers (earlier ones than the last taken restart the stream)."""
        if len(sample_ids) and int(sample_ids[0]) < self.position:
            self._restart()
        out = []
        for k in (int(k) for k in sample_ids):
            while True:
                block = next(self._blocks, None)
                if block is None:  # end of the stream: the next epoch starts from its top
                    if self.position == self._epoch_start:
                        raise EarlyBertError("the streamed corpus holds less than one block of text")
                    self._blocks, self._epoch_start = self._generate(), self.position
                    continue
                self.position += 1
                if self.position - 1 == k:
                    out.append(block)
                    break
        return np.stack(out)
