import pytest

from ner.data.conll import DataError, DocStart, Sentence, parse, read_conll


def write(tmp_path, content: bytes, name="train.txt"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_reads_tokens_and_tags_and_drops_docstart(tiny_dir):
    sents = read_conll(tiny_dir / "train.txt")
    assert sents[0].tokens[0] != "-DOCSTART-"
    assert all(len(s.tokens) == len(s.tags) for s in sents)
    assert len(sents) == 61


def test_docstart_lines_number_the_documents_and_a_file_without_them_has_one_per_sentence(tmp_path):
    path = write(tmp_path, b"-DOCSTART- O\n\nEU B-ORG\n\nPeter B-PER\n-DOCSTART- O\nParis B-LOC\n\nBonn B-LOC\n")
    sents = read_conll(path)
    assert [s.tokens for s in sents] == [["EU"], ["Peter"], ["Paris"], ["Bonn"]]
    assert [s.document for s in sents] == [1, 1, 2, 2]
    tweets = write(tmp_path, b"EU B-ORG\n\nPeter B-PER\n\nParis B-LOC\n", "tweets.txt")
    assert [s.document for s in read_conll(tweets)] == [0, 1, 2]


def test_crlf_bom_tabs_and_missing_final_newline_are_tolerated(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfEU\tB-ORG\r\nrejects   O\r\n\r\nPeter\tB-PER")
    sents = read_conll(path)
    assert [s.tokens for s in sents] == [["EU", "rejects"], ["Peter"]]
    assert [s.tags for s in sents] == [["B-ORG", "O"], ["B-PER"]]


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path, b"EU NNP B-ORG\nrejects VBZ O\nGerman B-MISC\n")
    with pytest.raises(DataError, match=r"train.txt:3: expected 3 columns"):
        read_conll(path)


def test_malformed_tag_names_file_and_line(tmp_path):
    path = write(tmp_path, b"EU B-ORG\n\nrejects PER\n")
    with pytest.raises(DataError, match=r"train.txt:3: tag 'PER'"):
        read_conll(path)


def test_non_utf8_byte_names_file_and_line(tmp_path):
    path = write(tmp_path, b"EU B-ORG\ncaf\xe9 O\n")
    with pytest.raises(DataError, match=r"train.txt:2: byte 0xe9"):
        read_conll(path)


def test_single_column_file_is_refused(tmp_path):
    path = write(tmp_path, b"EU\nrejects\n")
    with pytest.raises(DataError, match="train.txt:1: expected a token and a tag column"):
        read_conll(path)


def test_tag_column_can_be_chosen(tmp_path):
    path = write(tmp_path, b"EU B-ORG NNP\n")
    assert read_conll(path, tag_column=1)[0].tags == ["B-ORG"]
    with pytest.raises(DataError, match="tag 'NNP'"):
        read_conll(path)


def test_parse_streams_sentences_and_docstarts_and_tags_can_be_optional(tmp_path):
    text = "EU B-ORG\nrejects O\n\n-DOCSTART- O\n\n-DOCSTART- O\nPeter B-PER\n"
    items = list(parse(text.splitlines(keepends=True), "x.txt"))  # a stream's lines, as ner.tag reads them
    assert items == [
        Sentence(["EU", "rejects"], ["B-ORG", "O"], 1, 0),
        DocStart(4),
        DocStart(6),
        Sentence(["Peter"], ["B-PER"], 7, 2),
    ]
    assert items == list(parse([text], "x.txt"))  # the whole text at once: the same
    tokens_only = list(parse(["EU\nrejects\n\nPeter\n"], "x.txt", tags="optional"))
    assert [(s.tokens, s.tags) for s in tokens_only] == [(["EU", "rejects"], None), (["Peter"], None)]
    pos_only = list(parse(["EU NNP\nrejects VBZ\n"], "x.txt", tags="optional"))  # last column not tag shaped
    assert [(s.tokens, s.tags) for s in pos_only] == [(["EU", "rejects"], None)]
    with pytest.raises(DataError, match=r"x.txt:2: tag 'PER' is not O .* in the last column"):
        list(parse(["EU B-ORG\nrejects PER\n"], "x.txt", tags="optional"))
    with pytest.raises(DataError, match=r"x.txt:2: expected 1 columns like the first token line, found 2"):
        list(parse(["EU\nrejects O\n"], "x.txt", tags="optional"))
