"""Reading a recovery phrase and the word check off the screen, as a person does.

The backup page shows 24 words in three columns of eight. :func:`read_phrase`
takes the words :meth:`App.read <tests.gui.driver.App.read>` found between the
page's text and its "I wrote the 24 words down" line, sorts them into the
columns that the numbers 9 to 24 mark, and snaps each to the nearest BIP-39
word. The phrase's checksum tells whether the reading was right.
"""

from __future__ import annotations

import difflib
import re

from mnemonic import Mnemonic

from tests.gui.driver import GuiError, Word

ENGLISH = Mnemonic("english")
WORDS = frozenset(ENGLISH.wordlist)
NUMBER = re.compile(r"^(\d{1,2})[.,]?$")


def snap(text: str) -> str | None:
    """The BIP-39 word that ``text`` reads as, if one is close."""
    clean = re.sub(r"[^a-z]", "", text.lower())
    if clean in WORDS:
        return clean
    close = difflib.get_close_matches(clean, ENGLISH.wordlist, n=1, cutoff=0.75)
    return close[0] if close else None


def read_phrase(words: list[Word]) -> str:
    """The 24 words of the backup page, in order; raises GuiError if unreadable."""
    below = [w for w in words if w.text.lower() == "wrote"]
    if not below:
        raise GuiError("the backup page's 'I wrote the 24 words down' line is not on screen")
    bottom = below[0].top - 4
    numbers = {}
    for w in words:
        m = NUMBER.match(w.text)
        if m and 9 <= int(m.group(1)) <= 24 and w.top < bottom:
            numbers[int(m.group(1))] = w
    col2 = [numbers[n] for n in range(9, 17) if n in numbers]
    col3 = [numbers[n] for n in range(17, 25) if n in numbers]
    if not col2 or not col3:
        raise GuiError(f"the numbers of the word grid are not readable: {sorted(numbers)}")
    top = min(w.top for w in col2 + col3) - 8
    x2 = min(w.left for w in col2)
    x3 = min(w.left for w in col3)
    left = x2 - (x3 - x2)  # the first column is as wide as the others
    columns: list[list[Word]] = [[], [], []]
    for w in words:
        if not (top <= w.top < bottom and w.left >= left - 10) or NUMBER.match(w.text):
            continue
        columns[0 if w.left < x2 else 1 if w.left < x3 else 2].append(w)
    phrase = []
    for column in columns:
        if len(column) != 8:
            raise GuiError(f"a column of the word grid reads {[w.text for w in column]}")
        for w in sorted(column, key=lambda w: w.top):
            word = snap(w.text)
            if word is None:
                raise GuiError(f"{w.text!r} on the backup page is no BIP-39 word")
            phrase.append(word)
    text = " ".join(phrase)
    if not ENGLISH.check(text):
        raise GuiError(f"the phrase read off the screen fails its checksum: {text}")
    return text


def asked_positions(words: list[Word]) -> list[int]:
    """The check page's "Word #N" labels, top to bottom: the 1-based positions asked."""
    found = []
    for w in sorted(words, key=lambda w: w.top):
        m = re.match(r"^#(\d{1,2})$", w.text)
        if m:
            found.append(int(m.group(1)))
    return found
