"""Caption cleaning and the word vocabulary (saved as JSON)."""
import json
import re
from collections import Counter
from pathlib import Path

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)  # ids 0..3; pad is 0 so Keras masking (mask_zero) skips it

# The seed project's stop-word list, kept only as an option: dropping "a", "the", "is" makes
# captions ungrammatical ("dog runs grass"), so cleaning keeps them by default.
STOP_WORDS = frozenset("""a an the is are was were be been being am of in on at to for with by from and or
but as it its this that these those there their his her he she they them i you we our your""".split())

# Words a fluent caption does not end on ("a dog runs through the"): articles, prepositions,
# conjunctions and auxiliaries.
FUNCTION_WORDS = frozenset("""a an the and or but of in on at to for with by from into onto over under through
near while as is are was were be being has have his her its their""".split())

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def clean_caption(caption: str, remove_stop_words: bool = False) -> list[str]:
    """Lowercase words; punctuation and any token holding a digit are dropped."""
    words = []
    for token in caption.lower().split():
        if any(ch.isdigit() for ch in token):
            continue
        words.extend(_WORD.findall(token))
    if remove_stop_words:
        words = [w for w in words if w not in STOP_WORDS]
    return words


class Vocabulary:
    def __init__(self, tokens: list[str]):
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {tokens[:4]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary holds each token once")
        self.tokens = list(tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self.pad_id, self.start_id, self.end_id, self.unk_id = (self.index[t] for t in SPECIALS)

    @classmethod
    def build(cls, captions: list[list[str]], min_count: int = 5) -> "Vocabulary":
        counts = Counter(word for words in captions for word in words)
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, words: list[str]) -> list[int]:
        """Word ids framed by start and end."""
        return [self.start_id] + [self.index.get(w, self.unk_id) for w in words] + [self.end_id]

    def decode(self, ids) -> str:
        words = []
        for i in ids:
            if i == self.end_id:
                break
            if i not in (self.pad_id, self.start_id, self.unk_id):
                words.append(self.tokens[i])
        return " ".join(words)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"tokens": self.tokens}, indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["tokens"])
