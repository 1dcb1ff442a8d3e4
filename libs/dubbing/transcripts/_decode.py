"""Bytes of a transcript file to text.

Order: a byte-order mark decides (UTF-32 before UTF-16, whose BOM is a prefix of
UTF-32-LE's); then strict UTF-8; then a legacy 8-bit or East-Asian encoding.

Legacy files are the hard part: on subtitle-sized texts charset-normalizer's best
guess for short Western text is often a wrong Latin code page (French "Ça déjà été" in
Windows-1252 comes out as cp1257 or even cp1006), because every Latin code page decodes
such bytes with no visible mess. So Windows-1252, the code page legacy Windows
subtitle tools write in the West, is the default, and charset-normalizer's guess is
taken instead only when Windows-1252 cannot decode the bytes at all, or when its
decoding of the non-ASCII lines looks like mojibake (charset-normalizer's mess ratio at
least :data:`_MOJIBAKE`), as Cyrillic, Greek, Central-European or Chinese text read as
Windows-1252 does. Very short non-Western texts (a single word) can still be misread;
nothing can tell them apart, and a BOM or UTF-8 avoids the question.
"""

from __future__ import annotations

import codecs

from charset_normalizer import from_bytes
from charset_normalizer.md import mess_ratio

from ._model import TranscriptFormatError

# Longest BOM first: UTF-32-LE's BOM starts with UTF-16-LE's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Measured with charset-normalizer 3.5.2: real French/Spanish lines score 0.35-0.56 (it
# counts accented letters as suspicious), Cyrillic/Greek/Polish read as cp1252 score
# above 1.0, Hebrew 0.95.
_MOJIBAKE = 0.8

_LEGACY_DEFAULT = "cp1252"


def _line_of(data: bytes, offset: int, encoding: str) -> int:
    """1-based line of the byte at ``offset``, counting the newlines decoded before it."""
    before = data[:offset].decode(encoding, errors="replace")
    return before.count("\n") + 1


def _decode_strict(data: bytes, encoding: str, what: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise TranscriptFormatError(
            f"not valid {what}: {exc.reason} at byte {exc.start}",
            line=_line_of(data, exc.start, encoding),
        ) from None


def decode_text(data: bytes) -> str:
    """The text of a transcript file; see the module docstring for the order of guesses.

    Raises :class:`TranscriptFormatError` naming the line of the first undecodable byte
    when a BOM promises an encoding the bytes break, or when no encoding fits.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _decode_strict(data[len(bom) :], encoding, encoding.upper())
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf8_error = exc
    else:
        if "\x00" not in text:
            return text
        # NULs in "UTF-8" are usually UTF-16/32 saved without a BOM; let the detector try.
        guess = from_bytes(data).best()
        return str(guess) if guess is not None and "\x00" not in str(guess) else text
    try:
        western: str | None = data.decode(_LEGACY_DEFAULT)
    except UnicodeDecodeError:
        western = None
    if western is not None:
        accented = "\n".join(line for line in western.splitlines() if not line.isascii())
        if mess_ratio(accented, maximum_threshold=1.0) < _MOJIBAKE:
            return western
    guess = from_bytes(data).best()
    if guess is not None:
        return str(guess)
    if western is not None:
        # charset-normalizer found nothing better: mojibake-looking Windows-1252 is still
        # the most likely reading of an 8-bit file it decodes completely.
        return western
    raise TranscriptFormatError(
        "cannot decode the file: not UTF-8 (no byte-order mark), and no legacy encoding "
        f"fits (byte 0x{data[utf8_error.start]:02x})",
        line=_line_of(data, utf8_error.start, "utf-8"),
    )
