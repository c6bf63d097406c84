"""Providers' genre names on onair's genre taxonomy (the genre head's classes).

ACRCloud answers `genres: [{"name": "Hip Hop"}]`, AudD's Apple Music metadata `genreNames:
["Hip-Hop/Rap", "Music"]`. A name maps where the table or its last word says so ("Hard Rock" ->
rock); one the taxonomy does not know ("R&B/Soul", "Electronic", Apple's catch-all "Music") is
kept as given with `genre: null`, never dropped: an editor still reads it.
"""
from __future__ import annotations

import re

EXACT = {
    "blues": "blues", "classical": "classical", "opera": "classical", "baroque": "classical",
    "orchestral": "classical", "chamber music": "classical", "country": "country", "americana": "country",
    "disco": "disco", "hip hop": "hiphop", "hiphop": "hiphop", "hip hop/rap": "hiphop", "rap": "hiphop",
    "trap": "hiphop", "jazz": "jazz", "bebop": "jazz", "swing": "jazz", "metal": "metal",
    "pop": "pop", "k pop": "pop", "j pop": "pop", "reggae": "reggae", "dancehall": "reggae", "dub": "reggae",
    "ska": "reggae", "rock": "rock", "rock and roll": "rock", "rock & roll": "rock", "punk": "rock",
}
# a name ending in one of these words is that genre ("Alternative Rock", "Death Metal", "Smooth Jazz")
LAST_WORD = ("blues", "country", "disco", "jazz", "metal", "pop", "reggae", "rock")


def normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def to_taxonomy(name: str, classes=None) -> str | None:
    n = normalise(name)
    genre = EXACT.get(n)
    if genre is None:
        words = n.replace("/", " ").split()
        genre = words[-1] if words and words[-1] in LAST_WORD else None
    return genre if classes is None or genre in classes else None


def provider_tags(answer: dict | None, classes=None) -> list[dict]:
    """Genre tags of a provider's answer (a recognizer label, as the index keeps it): each with
    our genre or None, the name as given, and the provider it came from."""
    if not isinstance(answer, dict):
        return []
    names = answer.get("genres")
    if not isinstance(names, list):
        return []
    source = answer.get("provider") if isinstance(answer.get("provider"), str) else "provider"
    seen, out = set(), []
    for name in names:
        if not isinstance(name, str) or not name.strip() or name in seen:
            continue
        seen.add(name)
        out.append({"genre": to_taxonomy(name, classes), "given": name, "source": source})
    return out


def shown_genre(record: dict | None) -> str | None:
    """The genre a genre record shows a person (the overlay's card, the cue sheet): the provider's,
    where our taxonomy has it, before the model's top tag."""
    if not record:
        return None
    for t in record.get("provider_tags") or []:
        if isinstance(t, dict) and isinstance(t.get("genre"), str):
            return t["genre"]
    tags = record["tags"]
    return tags[0]["genre"] if tags else None
