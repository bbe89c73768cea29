"""Text content of the synthetic corpus, with labels.

Everything here is pure Python driven by a ``numpy.random.Generator``; the same
generator state always gives the same text.  All texts are lowercase and contain
only ``a-z``, apostrophes and single spaces (see :func:`normalize`).

* :func:`sentence` - varied English sentences (ASR, ER, SID, ASV, QbE documents)
* :data:`KEYWORDS`, :data:`UNKNOWN_WORDS` - keyword spotting vocabulary
* :data:`INTENTS`, :func:`intent_utterance` - FSC-like intents with several phrasings
* :func:`slot_utterance` - SNIPS-like commands with character-offset slots
"""

from __future__ import annotations

import re

import numpy as np

# ---------------------------------------------------------------------------
# vocabulary
# ---------------------------------------------------------------------------

# (singular, plural)
_NOUNS_RAW = """
dog dogs|cat cats|horse horses|rabbit rabbits|bird birds|fish fish|cow cows|sheep sheep|goat goats|mouse mice
tiger tigers|monkey monkeys|elephant elephants|turtle turtles|chicken chickens|duck ducks|spider spiders|camel camels
apple apples|banana bananas|orange oranges|lemon lemons|potato potatoes|tomato tomatoes|carrot carrots|onion onions
cookie cookies|sandwich sandwiches|cake cakes|pizza pizzas|egg eggs|melon melons|cherry cherries|pepper peppers
book books|letter letters|ticket tickets|picture pictures|camera cameras|computer computers|phone phones|pencil pencils
bottle bottles|basket baskets|blanket blankets|bucket buckets|candle candles|chair chairs|table tables|window windows
door doors|garden gardens|bicycle bicycles|truck trucks|boat boats|train trains|bus buses|car cars|wagon wagons
hammer hammers|ladder ladders|mirror mirrors|pillow pillows|jacket jackets|sweater sweaters|umbrella umbrellas
wallet wallets|key keys|box boxes|bag bags|hat hats|shoe shoes|glove gloves|ring rings|coin coins|map maps|clock clocks
radio radios|guitar guitars|piano pianos|drum drums|violin violins|lamp lamps|basket baskets|envelope envelopes
teacher teachers|doctor doctors|farmer farmers|driver drivers|baker bakers|singer singers|painter painters
student students|neighbor neighbors|soldier soldiers|captain captains|nurse nurses|pilot pilots|gardener gardeners
child children|woman women|man men|girl girls|boy boys|baby babies|family families|friend friends|stranger strangers
river rivers|mountain mountains|forest forests|island islands|valley valleys|bridge bridges|tower towers|castle castles
flower flowers|tree trees|stone stones|feather feathers|shell shells|cloud clouds|rainbow rainbows|puzzle puzzles
newspaper newspapers|magazine magazines|present presents|package packages|message messages|question questions
"""

NOUNS: list[tuple[str, str]] = []
for _chunk in _NOUNS_RAW.split("|"):
    _w = _chunk.split()
    if len(_w) == 2 and (_w[0], _w[1]) not in NOUNS:
        NOUNS.append((_w[0], _w[1]))
_PEOPLE = {"teacher", "doctor", "farmer", "driver", "baker", "singer", "painter", "student", "neighbor",
           "soldier", "captain", "nurse", "pilot", "gardener", "child", "woman", "man", "girl", "boy",
           "baby", "family", "friend", "stranger"}
_ANIMALS = {"dog", "cat", "horse", "rabbit", "bird", "fish", "cow", "sheep", "goat", "mouse", "tiger",
            "monkey", "elephant", "turtle", "chicken", "duck", "spider", "camel"}
AGENTS = [n for n in NOUNS if n[0] in _PEOPLE | _ANIMALS]
_AGENT_WORDS = {n[0] for n in AGENTS}
THINGS = [n for n in NOUNS if n[0] not in _PEOPLE | _ANIMALS]

ADJECTIVES = """big small little tiny huge old new young ancient modern red blue green yellow purple orange
white black brown gray pink golden silver happy angry quiet noisy lazy busy clever brave gentle
strange lovely ugly heavy light warm cold wet dry clean dirty broken shiny soft hard round square
long short tall funny friendly lucky hungry sleepy famous simple beautiful expensive cheap fresh
wooden plastic empty full dark bright""".split()

NAMES = """anna peter maria james lucy david emma thomas sophie daniel olivia michael grace robert
julia henry alice oscar nina victor laura simon helen martin clara hugo rosa felix kevin sarah""".split()

# base, past, -ing, 3rd person
_VERBS_RAW = """
find found finding finds|see saw seeing sees|buy bought buying buys|sell sold selling sells
carry carried carrying carries|paint painted painting paints|open opened opening opens
close closed closing closes|wash washed washing washes|clean cleaned cleaning cleans
build built building builds|break broke breaking breaks|fix fixed fixing fixes|hide hid hiding hides
bring brought bringing brings|take took taking takes|throw threw throwing throws|catch caught catching catches
follow followed following follows|watch watched watching watches|push pushed pushing pushes
pull pulled pulling pulls|drop dropped dropping drops|lift lifted lifting lifts|borrow borrowed borrowing borrows
choose chose choosing chooses|forget forgot forgetting forgets|remember remembered remembering remembers
visit visited visiting visits|call called calling calls|help helped helping helps|draw drew drawing draws
cook cooked cooking cooks|eat ate eating eats|order ordered ordering orders|deliver delivered delivering delivers
count counted counting counts|check checked checking checks|move moved moving moves|keep kept keeping keeps
show showed showing shows|send sent sending sends|want wanted wanting wants|like liked liking likes
"""
VERBS: list[tuple[str, str, str, str]] = [tuple(c.split()) for c in _VERBS_RAW.split("|") if len(c.split()) == 4]
_PERSON_VERBS = {"visit", "call", "help", "follow", "watch", "see", "find", "remember", "forget", "push",
                 "pull", "show"}

# intransitive: base, past, -ing, 3rd
_IVERBS_RAW = """sleep slept sleeping sleeps|run ran running runs|sing sang singing sings|dance danced dancing dances
laugh laughed laughing laughs|wait waited waiting waits|swim swam swimming swims|jump jumped jumping jumps
smile smiled smiling smiles|work worked working works|travel traveled traveling travels|arrive arrived arriving arrives"""
IVERBS: list[tuple[str, str, str, str]] = [tuple(c.split()) for c in _IVERBS_RAW.split("|") if len(c.split()) == 4]

PLACES = """kitchen garden station library market office school hospital museum village harbor park
bakery theater stadium airport restaurant hotel factory bedroom basement attic church beach farm
playground cinema bank street corner""".split()

PREPOSITIONS = ["in the", "near the", "behind the", "next to the", "inside the", "outside the", "at the"]
TIMES = ["yesterday", "today", "tomorrow", "last night", "this morning", "every day", "on monday",
         "on friday", "last week", "next week", "in the evening", "after lunch", "before dinner",
         "on sunday", "at noon", "in the afternoon", "last summer", "every winter"]
ADVERBS = ["quickly", "slowly", "quietly", "carefully", "suddenly", "happily", "finally", "always",
           "never", "often", "really", "almost", "easily", "gently", "loudly", "rarely"]
PRONOUNS = [("i", "i"), ("you", "you"), ("we", "we"), ("they", "they"), ("he", "he"), ("she", "she")]

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """Spell ``0 <= n < 1000`` in words (no hyphens)."""
    if n < 20:
        return ONES[n]
    if n < 100:
        t, o = divmod(n, 10)
        return TENS[t] + ("" if o == 0 else " " + ONES[o])
    h, r = divmod(n, 100)
    return ONES[h] + " hundred" + ("" if r == 0 else " and " + number_words(r))


_ALLOWED = re.compile(r"[^a-z' ]+")


def normalize(text: str) -> str:
    """Lowercase, keep only ``a-z``, apostrophe and single spaces."""
    text = _ALLOWED.sub(" ", text.lower().replace("-", " "))
    return " ".join(text.split())


def _c(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _p(rng: np.random.Generator, prob: float) -> bool:
    return bool(rng.random() < prob)


# ---------------------------------------------------------------------------
# sentences
# ---------------------------------------------------------------------------

def _det(rng, plural=False):
    if plural:
        return _c(rng, ["the", "some", "these", "those", "my", "our", "their", "many", "two", "three",
                        "five", "twelve", number_words(int(rng.integers(2, 100)))])
    return _c(rng, ["the", "a", "my", "your", "this", "that", "her", "his", "our", "every"])


def _np(rng, pool, plural=None, adj_prob=0.5, noun=None):
    """Noun phrase; returns (text, is_plural)."""
    if plural is None:
        plural = _p(rng, 0.3)
    if noun is not None:
        plural = False
        sing = noun
    else:
        sing, plur = _c(rng, pool)
    word = plur if (plural and noun is None) else sing
    det = _det(rng, plural)
    if det == "a" and word[0] in "aeiou":
        det = "an"
    parts = [det]
    if _p(rng, adj_prob):
        adj = _c(rng, ADJECTIVES)
        if det == "an" and adj[0] not in "aeiou":
            parts = ["a"]
        elif det == "a" and adj[0] in "aeiou":
            parts = ["an"]
        if _p(rng, 0.15):
            parts.append(_c(rng, ["very", "rather", "quite"]))
        parts.append(adj)
    parts.append(word)
    return " ".join(parts), plural


def _subject(rng, forced=None):
    """Returns (text, person) where person is '3s', '3p' or the pronoun."""
    if forced is not None:
        return _np(rng, AGENTS, noun=forced)[0], "3s"
    r = rng.random()
    if r < 0.25:
        return _c(rng, NAMES), "3s"
    if r < 0.45:
        pro = _c(rng, PRONOUNS)[0]
        return pro, ("3s" if pro in ("he", "she") else pro)
    text, plural = _np(rng, AGENTS)
    return text, ("3p" if plural else "3s")


def _object(rng, verb, forced=None):
    if forced is not None:
        return _np(rng, THINGS + AGENTS, noun=forced)[0]
    if verb in _PERSON_VERBS and _p(rng, 0.4):
        return _c(rng, NAMES) if _p(rng, 0.5) else _np(rng, AGENTS)[0]
    return _np(rng, THINGS)[0]


def _pp(rng):
    return _c(rng, PREPOSITIONS) + " " + _c(rng, PLACES)


def _be(person, past):
    if past:
        return "were" if person in ("3p", "we", "they", "you") else "was"
    return {"3s": "is", "he": "is", "she": "is", "i": "am"}.get(person, "are")


def _third(person):
    return person in ("3s", "he", "she")


def sentence(rng: np.random.Generator, force_word: str | None = None) -> str:
    """One random English sentence (about 5-14 words).

    ``force_word`` (a singular noun from :data:`NOUNS`) is guaranteed to appear as a word.
    """
    kind = int(rng.integers(10))
    force_subj = force_obj = None
    if force_word is not None:
        if kind not in (6, 7) and force_word in _AGENT_WORDS and _p(rng, 0.5):
            force_subj = force_word
        else:
            force_obj = force_word
    verb = _c(rng, VERBS)
    subj, person = _subject(rng, force_subj)
    obj = _object(rng, verb[0], force_obj)
    words: list[str]
    if kind <= 2:  # past declarative
        words = [subj]
        if _p(rng, 0.25):
            words.append(_c(rng, ADVERBS))
        words += [verb[1], obj]
        if _p(rng, 0.5):
            words.append(_pp(rng))
        if _p(rng, 0.4):
            words.append(_c(rng, TIMES))
    elif kind == 3:  # future / modal
        modal = _c(rng, ["will", "can", "should", "might", "must", "could", "would"])
        words = [subj, modal, verb[0], obj]
        if _p(rng, 0.5):
            words.append(_pp(rng))
        if _p(rng, 0.3):
            words.append(_c(rng, TIMES))
    elif kind == 4:  # negation
        if _p(rng, 0.5):
            aux = "did not" if _p(rng, 0.6) else _c(rng, ["will not", "cannot", "should not"])
        else:
            aux = "does not" if _third(person) else "do not"
        if _p(rng, 0.3):
            aux = {"did not": "didn't", "will not": "won't", "cannot": "can't", "should not": "shouldn't",
                   "does not": "doesn't", "do not": "don't"}[aux]
        words = [subj, aux, verb[0], obj]
        if _p(rng, 0.5):
            words.append(_pp(rng))
    elif kind == 5:  # progressive
        words = [subj, _be(person, _p(rng, 0.4)), verb[2], obj]
        if _p(rng, 0.6):
            words.append(_pp(rng))
    elif kind == 6:  # yes/no or wh questions
        q = int(rng.integers(4))
        if q == 0:
            words = ["did", subj, verb[0], obj]
            if _p(rng, 0.5):
                words.append(_c(rng, TIMES))
        elif q == 1:
            words = [_c(rng, ["why", "where", "when", "how"]), "did", subj, verb[0], obj]
        elif q == 2:
            words = ["can you", verb[0], obj]
            if _p(rng, 0.5):
                words.append(_pp(rng))
            if _p(rng, 0.3):
                words.append("please")
        else:
            thing, _ = _np(rng, THINGS, plural=False, adj_prob=0.3, noun=force_obj)
            words = ["where", "is", thing]
            if _p(rng, 0.5):
                words += ["that", subj, verb[1]]
    elif kind == 7:  # counting / existence
        n = int(rng.integers(2, 100))
        if force_obj is not None:
            words = ["there", _c(rng, ["is", "was"]), _np(rng, THINGS, noun=force_obj)[0], _pp(rng)]
        else:
            _s, plur = _c(rng, THINGS)
            words = ["there", _c(rng, ["are", "were"]), number_words(n), plur, _pp(rng)]
            if _p(rng, 0.3):
                words.append(_c(rng, TIMES))
        if _p(rng, 0.3) and force_subj is None:
            words = ["i", "think"] + words
    elif kind == 8:  # descriptive
        words = [subj if force_obj is None else obj, _be(person if force_obj is None else "3s", _p(rng, 0.5))]
        if _p(rng, 0.4):
            words.append(_c(rng, ["very", "not", "always", "never", "quite", "really"]))
        words.append(_c(rng, ADJECTIVES))
        if _p(rng, 0.5):
            words.append(_c(rng, TIMES))
        elif _p(rng, 0.5):
            words += ["because", _c(rng, PRONOUNS)[0], _c(rng, IVERBS)[1], _pp(rng)]
    else:  # intransitive + object clause
        iv = _c(rng, IVERBS)
        words = [subj, iv[1], _pp(rng)]
        if force_obj is not None or _p(rng, 0.6):
            words += [_c(rng, ["and then", "while", "after", "before"]), _c(rng, PRONOUNS)[0], verb[1], obj]
        elif _p(rng, 0.5):
            words.append(_c(rng, TIMES))
    text = normalize(" ".join(words))
    if force_word is not None and force_word not in text.split():  # pragma: no cover - safety net
        text = normalize(text + " with the " + force_word)
    return text


def content_words(min_len: int = 5) -> list[str]:
    """Singular nouns usable as spoken query terms (QbE)."""
    return sorted({n[0] for n in NOUNS if len(n[0]) >= min_len})


def vocabulary() -> set[str]:
    words: set[str] = set()
    for n in NOUNS:
        words.update(n)
    for v in VERBS + IVERBS:
        words.update(v)
    words.update(ADJECTIVES)
    words.update(NAMES)
    words.update(PLACES)
    words.update(ONES + [t for t in TENS if t] + ["hundred"])
    for s in PREPOSITIONS + TIMES + ADVERBS:
        words.update(s.split())
    return words


# ---------------------------------------------------------------------------
# keywords (Speech Commands style)
# ---------------------------------------------------------------------------

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
UNKNOWN_LABEL = "_unknown_"
SILENCE_LABEL = "_silence_"
KS_LABELS = KEYWORDS + [UNKNOWN_LABEL, SILENCE_LABEL]
UNKNOWN_WORDS = ["bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine",
                 "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero", "learn", "follow",
                 "forward", "backward", "visual", "apple", "window", "yellow", "music", "table"]


# ---------------------------------------------------------------------------
# intents (Fluent Speech Commands style)
# ---------------------------------------------------------------------------

IC_LOCATIONS = ["none", "kitchen", "bedroom", "washroom"]
IC_LANGUAGES = ["chinese", "korean", "english", "german"]
IC_ACTIONS = ["activate", "deactivate", "increase", "decrease", "bring", "change language"]
IC_OBJECTS = ["none", "music", "lights", "volume", "heat", "lamp", "newspaper", "juice", "socks", "shoes"] + IC_LANGUAGES

# phrasings: "{loc}" is replaced by a location phrase.  Templates are keyed by (action, object,
# has_location).
_LOC_TEMPLATES = {
    ("activate", "lights", True): [
        "turn on the lights in the {loc}", "switch on the {loc} lights", "switch the {loc} lights on",
        "lights on in the {loc}", "turn the {loc} lights on", "could you turn on the lights in the {loc}",
        "please switch on the lights in the {loc}", "{loc} lights on"],
    ("activate", "lights", False): [
        "turn on the lights", "switch on the lights", "lights on", "turn the lights on",
        "switch the lights on", "please turn on the lights", "i need some light"],
    ("deactivate", "lights", True): [
        "turn off the lights in the {loc}", "switch off the {loc} lights", "switch the {loc} lights off",
        "lights off in the {loc}", "turn the {loc} lights off", "{loc} lights off",
        "please switch off the lights in the {loc}"],
    ("deactivate", "lights", False): [
        "turn off the lights", "switch off the lights", "lights off", "turn the lights off",
        "switch the lights off", "please turn off the lights"],
    ("increase", "heat", True): [
        "turn up the heat in the {loc}", "increase the temperature in the {loc}", "make the {loc} warmer",
        "heat up the {loc}", "it's too cold in the {loc}", "turn the heat up in the {loc}",
        "{loc} heat up"],
    ("increase", "heat", False): [
        "turn up the heat", "increase the temperature", "make it warmer", "it's too cold in here",
        "turn the heat up", "heat up", "i'm cold"],
    ("decrease", "heat", True): [
        "turn down the heat in the {loc}", "decrease the temperature in the {loc}", "make the {loc} cooler",
        "it's too hot in the {loc}", "turn the heat down in the {loc}", "{loc} heat down"],
    ("decrease", "heat", False): [
        "turn down the heat", "decrease the temperature", "make it cooler", "it's too hot in here",
        "turn the heat down", "heat down"],
}
_PLAIN_TEMPLATES = {
    ("activate", "music"): ["play music", "put on some music", "start the music", "music on",
                            "turn on the music", "play some music please"],
    ("deactivate", "music"): ["stop the music", "pause the music", "turn off the music", "music off",
                              "stop playing music"],
    ("activate", "lamp"): ["turn on the lamp", "switch the lamp on", "lamp on", "switch on the lamp"],
    ("deactivate", "lamp"): ["turn off the lamp", "switch the lamp off", "lamp off", "switch off the lamp"],
    ("increase", "volume"): ["turn up the volume", "increase the volume", "make it louder", "volume up",
                             "louder please", "i can't hear that", "turn it up"],
    ("decrease", "volume"): ["turn down the volume", "decrease the volume", "make it quieter", "volume down",
                             "that's too loud", "turn it down", "quieter please"],
    ("change language", "none"): ["change the language", "switch the language", "change language",
                                  "i want another language", "use a different language"],
}
for _o in ["newspaper", "juice", "socks", "shoes"]:
    _art = "some" if _o in ("juice",) else "my" if _o in ("socks", "shoes") else "the"
    _PLAIN_TEMPLATES[("bring", _o)] = [f"bring me the {_o}", f"bring me {_art} {_o}", f"get me {_art} {_o}",
                                       f"fetch the {_o}", f"go get the {_o}", f"i need {_art} {_o}",
                                       f"could you bring the {_o}"]
for _l in IC_LANGUAGES:
    _PLAIN_TEMPLATES[("change language", _l)] = [
        f"change the language to {_l}", f"switch to {_l}", f"set my language to {_l}", f"use {_l}",
        f"language {_l}", f"i want to use {_l}", f"switch the language to {_l}"]


def _build_intents():
    out = []
    for (a, o, has_loc) in _LOC_TEMPLATES:
        if has_loc:
            out += [(a, o, loc) for loc in IC_LOCATIONS[1:]]
        else:
            out.append((a, o, "none"))
    out += [(a, o, "none") for (a, o) in _PLAIN_TEMPLATES]
    return sorted(set(out))


INTENTS: list[tuple[str, str, str]] = _build_intents()


def intent_utterance(rng: np.random.Generator, intent: tuple[str, str, str]) -> str:
    action, obj, loc = intent
    if (action, obj) in _PLAIN_TEMPLATES:
        return normalize(_c(rng, _PLAIN_TEMPLATES[(action, obj)]))
    tmpl = _c(rng, _LOC_TEMPLATES[(action, obj, loc != "none")])
    return normalize(tmpl.format(loc=loc))


# ---------------------------------------------------------------------------
# slot filling (SNIPS style)
# ---------------------------------------------------------------------------

SF_ARTISTS = ["maria stone", "the silver lakes", "john parker", "blue harbor", "lucy gray", "the night owls",
              "daniel brooks", "red canyon", "emma woods", "the paper kites", "oscar lane", "golden hour",
              "nina rivers", "the quiet storm", "victor hale", "sunny days"]
SF_GENRES = ["jazz", "rock", "classical", "hip hop", "country", "blues", "reggae", "pop", "folk", "metal",
             "soul", "disco"]
SF_PLAYLISTS = ["workout", "road trip", "chill evening", "morning coffee", "party", "study", "sleep",
                "summer hits", "rainy day"]
SF_CITIES = ["boston", "chicago", "denver", "paris", "london", "tokyo", "seattle", "austin", "madrid",
             "berlin", "toronto", "sydney", "dallas", "miami", "rome", "dublin", "vienna", "oslo"]
SF_CUISINES = ["italian", "chinese", "mexican", "thai", "indian", "japanese", "french", "greek", "korean",
               "spanish", "vietnamese", "turkish"]
SF_DATES = ["today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
            "sunday", "this weekend", "next week", "tonight"]
SF_CONDITIONS = ["rain", "snow", "sunny", "windy", "cloudy", "foggy"]
SLOT_TYPES = ["artist", "city", "condition", "cuisine", "date", "genre", "party_size", "playlist", "time"]
SF_INTENTS = ["play_music", "add_to_playlist", "set_alarm", "get_weather", "book_restaurant"]


def _time_phrase(rng):
    h = int(rng.integers(1, 13))
    r = rng.random()
    if r < 0.3:
        return number_words(h) + " o'clock"
    if r < 0.55:
        return number_words(h) + " " + _c(rng, ["fifteen", "thirty", "forty five", "twenty", "ten"])
    if r < 0.7:
        return "half past " + number_words(h)
    if r < 0.8:
        return "a quarter to " + number_words(h)
    if r < 0.9:
        return number_words(h) + " in the " + _c(rng, ["morning", "evening", "afternoon"])
    return _c(rng, ["noon", "midnight"])


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _date_phrase(rng):
    d = _c(rng, SF_DATES)
    prefix = "on " if d.endswith("day") and d not in ("today",) else ""
    return prefix, d


class _Builder:
    def __init__(self):
        self.text = ""
        self.slots: list[dict] = []

    def add(self, s: str):
        s = normalize(s)
        if not s:
            return
        if self.text:
            self.text += " "
        self.text += s

    def slot(self, typ: str, value: str):
        value = normalize(value)
        if self.text:
            self.text += " "
        start = len(self.text)
        self.text += value
        self.slots.append({"type": typ, "value": value, "start": start, "end": start + len(value)})


def slot_utterance(rng: np.random.Generator, intent: str | None = None) -> tuple[str, str, list[dict]]:
    """Returns (intent, text, slots) where ``text[s['start']:s['end']] == s['value']``."""
    if intent is None:
        intent = _c(rng, SF_INTENTS)
    b = _Builder()
    if intent == "play_music":
        k = int(rng.integers(5))
        b.add(_c(rng, ["play", "please play", "can you play", "i want to hear", "put on"]))
        if k == 0:
            b.add("some")
            b.slot("genre", _c(rng, SF_GENRES))
            b.add("music by")
            b.slot("artist", _c(rng, SF_ARTISTS))
        elif k == 1:
            b.add("something by")
            b.slot("artist", _c(rng, SF_ARTISTS))
        elif k == 2:
            b.add("some")
            b.slot("genre", _c(rng, SF_GENRES))
            if _p(rng, 0.5):
                b.add("music")
        elif k == 3:
            b.add("my")
            b.slot("playlist", _c(rng, SF_PLAYLISTS))
            b.add("playlist")
        else:
            b.slot("artist", _c(rng, SF_ARTISTS))
            if _p(rng, 0.5):
                b.add("from my")
                b.slot("playlist", _c(rng, SF_PLAYLISTS))
                b.add("playlist")
    elif intent == "add_to_playlist":
        b.add(_c(rng, ["add", "please add", "put"]))
        b.add(_c(rng, ["this song by", "a song by", "the new album by", "something from"]))
        b.slot("artist", _c(rng, SF_ARTISTS))
        b.add(_c(rng, ["to my", "to the", "onto my"]))
        b.slot("playlist", _c(rng, SF_PLAYLISTS))
        b.add("playlist")
    elif intent == "set_alarm":
        k = int(rng.integers(3))
        b.add(["set an alarm for", "wake me up at", "remind me at"][k])
        b.slot("time", _time_phrase(rng))
        if _p(rng, 0.6):
            prefix, d = _date_phrase(rng)
            b.add(prefix)
            b.slot("date", d)
    elif intent == "get_weather":
        k = int(rng.integers(3))
        if k == 0:
            b.add(_c(rng, ["what's the weather like in", "what is the weather in", "tell me the weather in"]))
            b.slot("city", _c(rng, SF_CITIES))
            prefix, d = _date_phrase(rng)
            b.add(prefix)
            b.slot("date", d)
        elif k == 1:
            b.add("will it be")
            b.slot("condition", _c(rng, SF_CONDITIONS))
            b.add("in")
            b.slot("city", _c(rng, SF_CITIES))
            if _p(rng, 0.7):
                prefix, d = _date_phrase(rng)
                b.add(prefix)
                b.slot("date", d)
        else:
            b.add("how cold will it be in")
            b.slot("city", _c(rng, SF_CITIES))
            if _p(rng, 0.6):
                prefix, d = _date_phrase(rng)
                b.add(prefix)
                b.slot("date", d)
    elif intent == "book_restaurant":
        k = int(rng.integers(3))
        if k == 0:
            b.add("book a table for")
            b.slot("party_size", number_words(int(rng.integers(1, 13))))
            cuisine = _c(rng, SF_CUISINES)
            b.add("at " + _a(cuisine))
            b.slot("cuisine", cuisine)
            b.add("restaurant in")
            b.slot("city", _c(rng, SF_CITIES))
        elif k == 1:
            cuisine = _c(rng, SF_CUISINES)
            b.add("reserve " + _a(cuisine))
            b.slot("cuisine", cuisine)
            b.add("place for")
            b.slot("party_size", number_words(int(rng.integers(1, 13))))
            b.add("people")
            prefix, d = _date_phrase(rng)
            b.add(prefix)
            b.slot("date", d)
            if _p(rng, 0.5):
                b.add("at")
                b.slot("time", _time_phrase(rng))
        else:
            cuisine = _c(rng, SF_CUISINES)
            b.add("find me " + _a(cuisine))
            b.slot("cuisine", cuisine)
            b.add("restaurant in")
            b.slot("city", _c(rng, SF_CITIES))
            b.add("for")
            b.slot("time", _time_phrase(rng))
    else:
        raise ValueError(f"unknown slot intent {intent!r}")
    return intent, b.text, b.slots


EMOTIONS = ["neutral", "happy", "sad", "angry"]
