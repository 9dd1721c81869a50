import pytest

from pipeline.vocab import Vocabulary, clean_caption


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


def test_vocabulary_rejects_malformed_token_lists():
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError):
        Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "a"])
