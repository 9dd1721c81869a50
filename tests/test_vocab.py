import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.vocab import SPECIALS, STOP_WORDS, Vocabulary, clean_caption


def test_cleaning_keeps_function_words_and_drops_digits_and_punctuation():
    assert clean_caption("A dog runs through the grass .") == ["a", "dog", "runs", "through", "the", "grass"]
    assert clean_caption("Two men , 3 dogs and a T-shirt !") == ["two", "men", "dogs", "and", "a", "t-shirt"]
    assert clean_caption("  The boy's 2nd  ball\t") == ["the", "boy", "s", "ball"]


def test_stop_word_removal_is_optional():
    assert clean_caption("A dog runs through the grass", remove_stop_words=True) == ["dog", "runs", "through", "grass"]


def test_vocabulary_min_count_specials_and_json_round_trip(tmp_path):
    captions = [["a", "dog"], ["a", "cat"], ["a", "dog", "runs"]]
    vocab = Vocabulary.build(captions, min_count=2)
    assert vocab.tokens == ["<pad>", "<start>", "<end>", "<unk>", "a", "dog"]
    ids = vocab.encode(["a", "cat", "dog"])
    assert ids == [vocab.start_id, 4, vocab.unk_id, 5, vocab.end_id]
    assert vocab.decode(ids[1:]) == "a dog"  # <unk> never shows, decoding stops at <end>
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded.tokens == vocab.tokens and loaded.end_id == vocab.end_id


def test_by_default_the_vocabulary_keeps_words_seen_at_least_five_times_most_frequent_first():
    captions = [["zebra", "runs"]] * 5 + [["zebra", "ant"]] * 2 + [["cat"]] * 4 + [["ant"]] * 4
    assert Vocabulary.build(captions).tokens == [*SPECIALS, "zebra", "ant", "runs"]  # ties in alphabetical order


def test_vocab_json_lists_one_token_per_line(tmp_path):
    """So that two vocabularies diff line by line."""
    vocab = Vocabulary([*SPECIALS, "dog", "runs"])
    vocab.save(tmp_path / "vocab.json")
    assert (tmp_path / "vocab.json").read_text(encoding="utf-8") == (
        '{\n"tokens": [\n"<pad>",\n"<start>",\n"<end>",\n"<unk>",\n"dog",\n"runs"\n]\n}\n')


def test_vocabulary_rejects_malformed_token_lists():
    message = "a vocabulary must start with ('<pad>', '<start>', '<end>', '<unk>'), got ['a', 'b', 'c', 'd']"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Vocabulary(["a", "b", "c", "d", "e"])
    with pytest.raises(ValueError, match="^a vocabulary holds each token once$"):
        Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "a"])


# --- properties over generated input ------------------------------------------------------------

WORD = st.from_regex(r"[a-z]{1,8}(-[a-z]{1,5})?", fullmatch=True)


CAPTION_LIKE = st.one_of(st.text(max_size=80), st.text(alphabet="abcXYZ029-'.,!?& \t", max_size=60))


@pytest.mark.slow
@settings(max_examples=300, deadline=None, derandomize=True)
@given(CAPTION_LIKE)
def test_cleaning_gives_lowercase_words_and_is_idempotent(caption):
    words = clean_caption(caption)
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", w) for w in words)
    assert clean_caption(" ".join(words)) == words
    assert set(clean_caption(caption, remove_stop_words=True)) == set(words) - STOP_WORDS


@pytest.mark.slow
@settings(max_examples=200, deadline=None, derandomize=True)
@given(known=st.lists(WORD, min_size=1, max_size=12, unique=True), caption=st.lists(WORD, max_size=15))
def test_vocabulary_round_trips_known_words_and_drops_unknown_ones(known, caption, tmp_path_factory):
    vocab = Vocabulary.build([known], min_count=1)
    ids = vocab.encode(caption)
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id and len(ids) == len(caption) + 2
    assert vocab.decode(ids[1:]) == " ".join(w for w in caption if w in known)
    path = tmp_path_factory.mktemp("vocab") / "vocab.json"
    vocab.save(path)
    assert Vocabulary.load(path).tokens == vocab.tokens
