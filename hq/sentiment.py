"""A small sentiment lexicon per language, for judging news and social posts before a
flash offer rides on them (:mod:`hq.feeds`).

Each language has a few dozen words scored +1 (good news, cheerful) or -1 (harm, grief,
anger); :func:`score` is ``(positive - negative) / matched`` over the words of a text
found in its language's list, so in ``[-1, 1]`` and 0 when none is found. A word right
after a negation ("not", "nicht", "pas", "no") counts the other way. Words are compared
case-folded and by prefix of at least the listed stem (``katastroph`` matches
``Katastrophe`` and ``katastrophal``). It is deliberately crude: its job is to keep a
cheerful offer away from a disaster headline, and a human approves every proposal.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["LANGUAGES", "LEXICON", "language_of", "score"]

_WORD: Final = re.compile(r"[^\W\d_]+", re.UNICODE)

# stems: +1 good, -1 bad
_EN: Final = {
    "win": 1, "won": 1, "victor": 1, "celebrat": 1, "champion": 1, "happy": 1, "great": 1,
    "love": 1, "sunny": 1, "sunshine": 1, "record": 1, "best": 1, "festiv": 1, "party": 1,
    "joy": 1, "success": 1, "hero": 1, "amazing": 1, "delight": 1, "cheer": 1, "award": 1,
    "dead": -1, "death": -1, "die": -1, "kill": -1, "disaster": -1, "tragic": -1,
    "tragedy": -1, "crash": -1, "flood": -1, "wildfire": -1, "attack": -1, "injur": -1,
    "victim": -1, "war": -1, "terror": -1, "mourn": -1, "grief": -1, "scandal": -1,
    "recall": -1, "outbreak": -1, "explosion": -1, "storm": -1, "angry": -1, "hate": -1,
}
_DE: Final = {
    "sieg": 1, "gewonnen": 1, "gewinn": 1, "meister": 1, "feier": 1, "glück": 1,
    "freude": 1, "sonne": 1, "sonnig": 1, "rekord": 1, "toll": 1, "super": 1, "fest": 1,
    "held": 1, "erfolg": 1, "liebe": 1, "jubel": 1, "beste": 1, "prima": 1, "klasse": 1,
    "tot": -1, "tod": -1, "gestorben": -1, "sterb": -1, "katastroph": -1, "tragisch": -1,
    "unfall": -1, "unglück": -1, "hochwasser": -1, "überschwemm": -1, "brand": -1,
    "angriff": -1, "verletz": -1, "opfer": -1, "krieg": -1, "terror": -1, "trauer": -1,
    "skandal": -1, "rückruf": -1, "explosion": -1, "sturm": -1, "wut": -1, "hass": -1,
}
_FR: Final = {
    "victoire": 1, "gagn": 1, "champion": 1, "fête": 1, "célébr": 1, "heureu": 1,
    "joie": 1, "soleil": 1, "ensoleill": 1, "record": 1, "génial": 1, "super": 1,
    "héros": 1, "succès": 1, "réussi": 1, "amour": 1, "meilleur": 1, "bravo": 1,
    "formidable": 1, "magnifique": 1,
    "mort": -1, "décès": -1, "tué": -1, "catastroph": -1, "tragique": -1, "tragédie": -1,
    "accident": -1, "inondation": -1, "incendie": -1, "attaque": -1, "attentat": -1,
    "blessé": -1, "victime": -1, "guerre": -1, "terror": -1, "deuil": -1, "scandale": -1,
    "rappel": -1, "explosion": -1, "tempête": -1, "colère": -1, "haine": -1,
}
_ES: Final = {
    "victoria": 1, "gan": 1, "campeón": 1, "campeon": 1, "fiesta": 1, "celebr": 1,
    "feliz": 1, "alegría": 1, "alegria": 1, "sol": 1, "soleado": 1, "récord": 1,
    "genial": 1, "héroe": 1, "éxito": 1, "exito": 1, "amor": 1, "mejor": 1, "estupendo": 1,
    "maravill": 1,
    "muert": -1, "fallec": -1, "asesin": -1, "catástrofe": -1, "catastrof": -1,
    "trágico": -1, "tragedia": -1, "accidente": -1, "inundación": -1, "incendio": -1,
    "ataque": -1, "atentado": -1, "herido": -1, "víctima": -1, "guerra": -1, "terror": -1,
    "luto": -1, "escándalo": -1, "retirada": -1, "explosión": -1, "tormenta": -1,
    "odio": -1,
}
LEXICON: Final[dict[str, dict[str, int]]] = {"en": _EN, "de": _DE, "fr": _FR, "es": _ES}
LANGUAGES: Final = tuple(LEXICON)
_NEGATIONS: Final = {"en": {"not", "no", "never"}, "de": {"nicht", "kein", "keine", "nie"},
                     "fr": {"pas", "jamais", "aucun"}, "es": {"no", "nunca", "ningún"}}
_STEM_MIN: Final = 3  # a stem shorter than this matches whole words only


def language_of(tag: str | None, default: str = "en") -> str:
    """``"de-DE"`` -> ``"de"``; an unknown or missing tag -> ``default``."""
    lang = (tag or "").strip().lower().replace("_", "-").split("-")[0]
    return lang if lang in LEXICON else default


def _value(word: str, lex: dict[str, int]) -> int:
    if word in lex:
        return lex[word]
    for n in range(len(word) - 1, _STEM_MIN - 1, -1):  # the longest listed stem first
        v = lex.get(word[:n])
        if v is not None and n > _STEM_MIN:
            return v
    return 0


def score(text: str, lang: str) -> float:
    """The sentiment of ``text`` in ``[-1, 1]`` by ``lang``'s lexicon; 0 if no word is known."""
    code = language_of(lang)
    lex, negations = LEXICON[code], _NEGATIONS[code]
    total = matched = 0
    negate = False
    for word in (w.casefold() for w in _WORD.findall(text)):
        if word in negations:
            negate = True
            continue
        v = _value(word, lex)
        if v:
            total += -v if negate else v
            matched += 1
        negate = False
    return 0.0 if matched == 0 else total / matched
