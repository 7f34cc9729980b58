"""Sentences of the corpus, generated from word lists written here (nothing is downloaded).

Each language has five slots (subject, action, time, place, manner) of grammatical phrases; their
product gives tens of thousands of sentences of 12-20 words (3-6 s of speech). A fixed permutation picks
``POOL_SIZE`` distinct ones per language and cuts them into disjoint train / dev / eval pools, so
no training sentence is ever read in an evaluation split.

>>> pools = text_pools("de")
>>> {k: len(v) for k, v in pools.items()}
{'train': 240, 'dev': 120, 'eval': 120}
>>> set(pools["train"]) & set(pools["eval"])
set()
"""

from __future__ import annotations

import itertools
import random
from functools import cache

POOL_SIZE = 480
POOL_SHARES = {"train": 0.5, "dev": 0.25, "eval": 0.25}
SHORTEST_DROPPED = 0.35  # share of the shortest combinations left out

# language -> (template, subjects, actions, times, places); phrases are already inflected.
_WORDS: dict[str, tuple[str, list[str], list[str], list[str], list[str]]] = {
    "en": (
        "{s} {a} {p} {t} {m}.",
        [
            "The old farmer",
            "My younger sister",
            "The new teacher",
            "A tired doctor",
            "The quiet neighbour",
            "Our friendly baker",
            "The young student",
            "A famous painter",
            "The careful driver",
            "My grandfather",
            "The busy lawyer",
            "A cheerful nurse",
        ],
        [
            "reads a long letter",
            "buys fresh bread",
            "carries a heavy basket",
            "writes a short story",
            "cooks a warm soup",
            "paints the wooden door",
            "finds a small key",
            "sells old books",
            "cleans the big window",
            "repairs a broken chair",
            "plants yellow flowers",
            "washes the red car",
        ],
        [
            "every morning",
            "on Sunday",
            "after lunch",
            "late in the evening",
            "before the holidays",
            "in the spring",
            "at eight o'clock",
            "once a week",
        ],
        [
            "in the garden",
            "near the station",
            "at the market",
            "in the kitchen",
            "behind the church",
            "by the river",
            "in the city centre",
            "at the old school",
            "in the village",
            "on the balcony",
        ],
        [
            "with great care",
            "without a word",
            "for the whole family",
            "as usual",
            "with a big smile",
            "for the first time",
        ],
    ),
    "de": (
        "{s} {a} {t} {p} {m}.",
        [
            "Der alte Bauer",
            "Meine jüngere Schwester",
            "Der neue Lehrer",
            "Eine müde Ärztin",
            "Der ruhige Nachbar",
            "Unser freundlicher Bäcker",
            "Die junge Studentin",
            "Ein berühmter Maler",
            "Der vorsichtige Fahrer",
            "Mein Großvater",
            "Die fleißige Anwältin",
            "Eine fröhliche Krankenschwester",
        ],
        [
            "liest einen langen Brief",
            "kauft frisches Brot",
            "trägt einen schweren Korb",
            "schreibt eine kurze Geschichte",
            "kocht eine warme Suppe",
            "streicht die hölzerne Tür",
            "findet einen kleinen Schlüssel",
            "verkauft alte Bücher",
            "putzt das große Fenster",
            "repariert einen kaputten Stuhl",
            "pflanzt gelbe Blumen",
            "wäscht das rote Auto",
        ],
        [
            "jeden Morgen",
            "am Sonntag",
            "nach dem Mittagessen",
            "spät am Abend",
            "vor den Ferien",
            "im Frühling",
            "um acht Uhr",
            "einmal pro Woche",
        ],
        [
            "im Garten",
            "neben dem Bahnhof",
            "auf dem Markt",
            "in der Küche",
            "hinter der Kirche",
            "am Fluss",
            "in der Innenstadt",
            "in der alten Schule",
            "im Dorf",
            "auf dem Balkon",
        ],
        [
            "mit großer Sorgfalt",
            "ohne ein Wort",
            "für die ganze Familie",
            "wie immer",
            "mit einem Lächeln",
            "zum ersten Mal",
        ],
    ),
    "fr": (
        "{s} {a} {p} {t} {m}.",
        [
            "Le vieux fermier",
            "Ma petite sœur",
            "Le nouveau professeur",
            "Une médecin fatiguée",
            "Le voisin tranquille",
            "Notre boulanger aimable",
            "La jeune étudiante",
            "Un peintre célèbre",
            "Le chauffeur prudent",
            "Mon grand-père",
            "L'avocate occupée",
            "Une infirmière joyeuse",
        ],
        [
            "lit une longue lettre",
            "achète du pain frais",
            "porte un panier lourd",
            "écrit une courte histoire",
            "prépare une soupe chaude",
            "peint la porte en bois",
            "trouve une petite clé",
            "vend de vieux livres",
            "nettoie la grande fenêtre",
            "répare une chaise cassée",
            "plante des fleurs jaunes",
            "lave la voiture rouge",
        ],
        [
            "chaque matin",
            "le dimanche",
            "après le déjeuner",
            "tard le soir",
            "avant les vacances",
            "au printemps",
            "à huit heures",
            "une fois par semaine",
        ],
        [
            "dans le jardin",
            "près de la gare",
            "au marché",
            "dans la cuisine",
            "derrière l'église",
            "au bord de la rivière",
            "au centre-ville",
            "à la vieille école",
            "au village",
            "sur le balcon",
        ],
        [
            "avec beaucoup de soin",
            "sans dire un mot",
            "pour toute la famille",
            "comme d'habitude",
            "avec un grand sourire",
            "pour la première fois",
        ],
    ),
    "es": (
        "{s} {a} {p} {t} {m}.",
        [
            "El viejo granjero",
            "Mi hermana menor",
            "El nuevo profesor",
            "Una médica cansada",
            "El vecino tranquilo",
            "Nuestro panadero amable",
            "La joven estudiante",
            "Un pintor famoso",
            "El conductor prudente",
            "Mi abuelo",
            "La abogada ocupada",
            "Una enfermera alegre",
        ],
        [
            "lee una carta larga",
            "compra pan fresco",
            "lleva una cesta pesada",
            "escribe una historia corta",
            "prepara una sopa caliente",
            "pinta la puerta de madera",
            "encuentra una llave pequeña",
            "vende libros viejos",
            "limpia la ventana grande",
            "arregla una silla rota",
            "planta flores amarillas",
            "lava el coche rojo",
        ],
        [
            "cada mañana",
            "los domingos",
            "después del almuerzo",
            "tarde por la noche",
            "antes de las vacaciones",
            "en primavera",
            "a las ocho",
            "una vez por semana",
        ],
        [
            "en el jardín",
            "cerca de la estación",
            "en el mercado",
            "en la cocina",
            "detrás de la iglesia",
            "junto al río",
            "en el centro de la ciudad",
            "en la vieja escuela",
            "en el pueblo",
            "en el balcón",
        ],
        [
            "con mucho cuidado",
            "sin decir nada",
            "para toda la familia",
            "como siempre",
            "con una gran sonrisa",
            "por primera vez",
        ],
    ),
    "it": (
        "{s} {a} {p} {t} {m}.",
        [
            "Il vecchio contadino",
            "Mia sorella minore",
            "Il nuovo insegnante",
            "Una dottoressa stanca",
            "Il vicino tranquillo",
            "Il nostro fornaio gentile",
            "La giovane studentessa",
            "Un pittore famoso",
            "L'autista prudente",
            "Mio nonno",
            "L'avvocata impegnata",
            "Un'infermiera allegra",
        ],
        [
            "legge una lunga lettera",
            "compra pane fresco",
            "porta un cesto pesante",
            "scrive una breve storia",
            "prepara una zuppa calda",
            "dipinge la porta di legno",
            "trova una piccola chiave",
            "vende vecchi libri",
            "pulisce la grande finestra",
            "ripara una sedia rotta",
            "pianta fiori gialli",
            "lava la macchina rossa",
        ],
        [
            "ogni mattina",
            "la domenica",
            "dopo pranzo",
            "tardi la sera",
            "prima delle vacanze",
            "in primavera",
            "alle otto",
            "una volta alla settimana",
        ],
        [
            "nel giardino",
            "vicino alla stazione",
            "al mercato",
            "in cucina",
            "dietro la chiesa",
            "lungo il fiume",
            "in centro città",
            "nella vecchia scuola",
            "nel villaggio",
            "sul balcone",
        ],
        [
            "con grande cura",
            "senza dire una parola",
            "per tutta la famiglia",
            "come sempre",
            "con un grande sorriso",
            "per la prima volta",
        ],
    ),
    "nl": (
        "{s} {a} {t} {p} {m}.",
        [
            "De oude boer",
            "Mijn jongere zus",
            "De nieuwe leraar",
            "Een vermoeide dokter",
            "De rustige buurman",
            "Onze vriendelijke bakker",
            "De jonge studente",
            "Een beroemde schilder",
            "De voorzichtige chauffeur",
            "Mijn grootvader",
            "De drukke advocate",
            "Een vrolijke verpleegster",
        ],
        [
            "leest een lange brief",
            "koopt vers brood",
            "draagt een zware mand",
            "schrijft een kort verhaal",
            "kookt een warme soep",
            "verft de houten deur",
            "vindt een kleine sleutel",
            "verkoopt oude boeken",
            "poetst het grote raam",
            "repareert een kapotte stoel",
            "plant gele bloemen",
            "wast de rode auto",
        ],
        [
            "elke ochtend",
            "op zondag",
            "na de lunch",
            "laat in de avond",
            "voor de vakantie",
            "in de lente",
            "om acht uur",
            "een keer per week",
        ],
        [
            "in de tuin",
            "bij het station",
            "op de markt",
            "in de keuken",
            "achter de kerk",
            "aan de rivier",
            "in het centrum",
            "in de oude school",
            "in het dorp",
            "op het balkon",
        ],
        [
            "met grote zorg",
            "zonder een woord",
            "voor de hele familie",
            "zoals altijd",
            "met een brede glimlach",
            "voor de eerste keer",
        ],
    ),
    "pt": (
        "{s} {a} {p} {t} {m}.",
        [
            "O velho agricultor",
            "A minha irmã mais nova",
            "O novo professor",
            "Uma médica cansada",
            "O vizinho tranquilo",
            "O nosso padeiro simpático",
            "A jovem estudante",
            "Um pintor famoso",
            "O motorista cuidadoso",
            "O meu avô",
            "A advogada ocupada",
            "Uma enfermeira alegre",
        ],
        [
            "lê uma carta comprida",
            "compra pão fresco",
            "leva um cesto pesado",
            "escreve uma história curta",
            "prepara uma sopa quente",
            "pinta a porta de madeira",
            "encontra uma chave pequena",
            "vende livros antigos",
            "limpa a janela grande",
            "arranja uma cadeira partida",
            "planta flores amarelas",
            "lava o carro vermelho",
        ],
        [
            "todas as manhãs",
            "ao domingo",
            "depois do almoço",
            "tarde à noite",
            "antes das férias",
            "na primavera",
            "às oito horas",
            "uma vez por semana",
        ],
        [
            "no jardim",
            "perto da estação",
            "no mercado",
            "na cozinha",
            "atrás da igreja",
            "junto ao rio",
            "no centro da cidade",
            "na escola antiga",
            "na aldeia",
            "na varanda",
        ],
        [
            "com muito cuidado",
            "sem dizer nada",
            "para toda a família",
            "como sempre",
            "com um grande sorriso",
            "pela primeira vez",
        ],
    ),
    "pl": (
        "{s} {a} {p} {t} {m}.",
        [
            "Stary rolnik",
            "Moja młodsza siostra",
            "Nowy nauczyciel",
            "Zmęczona lekarka",
            "Spokojny sąsiad",
            "Nasz miły piekarz",
            "Młoda studentka",
            "Znany malarz",
            "Ostrożny kierowca",
            "Mój dziadek",
            "Zajęta prawniczka",
            "Wesoła pielęgniarka",
        ],
        [
            "czyta długi list",
            "kupuje świeży chleb",
            "niesie ciężki kosz",
            "pisze krótkie opowiadanie",
            "gotuje ciepłą zupę",
            "maluje drewniane drzwi",
            "znajduje mały klucz",
            "sprzedaje stare książki",
            "czyści duże okno",
            "naprawia zepsute krzesło",
            "sadzi żółte kwiaty",
            "myje czerwony samochód",
        ],
        [
            "każdego ranka",
            "w niedzielę",
            "po obiedzie",
            "późnym wieczorem",
            "przed wakacjami",
            "wiosną",
            "o ósmej",
            "raz w tygodniu",
        ],
        [
            "w ogrodzie",
            "obok dworca",
            "na targu",
            "w kuchni",
            "za kościołem",
            "nad rzeką",
            "w centrum miasta",
            "w starej szkole",
            "na wsi",
            "na balkonie",
        ],
        [
            "z wielką starannością",
            "bez słowa",
            "dla całej rodziny",
            "jak zwykle",
            "z szerokim uśmiechem",
            "po raz pierwszy",
        ],
    ),
}

LANGUAGES = tuple(_WORDS)


@cache
def sentences(lang: str) -> tuple[str, ...]:
    """``POOL_SIZE`` distinct sentences of ``lang`` in a fixed order (independent of any seed).

    Only the longer ~65 % of the combinations are used, so that even the fastest engine speaks
    each sentence for more than the 2 s training crop.
    """
    if lang not in _WORDS:
        raise KeyError(f"no sentences for language {lang!r}; known: {', '.join(LANGUAGES)}")
    template, *slots = _WORDS[lang]
    texts = [template.format(s=s, a=a, t=t, p=p, m=m) for s, a, t, p, m in itertools.product(*slots)]
    floor = sorted(len(x) for x in texts)[int(SHORTEST_DROPPED * len(texts))]
    texts = [x for x in texts if len(x) >= floor]
    random.Random(f"sourcetrace-text-{lang}").shuffle(texts)
    return tuple(texts[:POOL_SIZE])


@cache
def text_pools(lang: str) -> dict[str, tuple[str, ...]]:
    """Disjoint train / dev / eval sentence pools of ``lang``."""
    sents = sentences(lang)
    pools, start = {}, 0
    for split, share in POOL_SHARES.items():
        n = round(share * len(sents))
        pools[split] = sents[start : start + n]
        start += n
    return pools


def pick_texts(lang: str, split: str, n: int, key: str) -> list[str]:
    """``n`` distinct sentences of ``split``'s pool, chosen reproducibly from ``key`` (seed + cell)."""
    pool = text_pools(lang)[split]
    if n > len(pool):
        raise ValueError(f"{n} clips asked of the {len(pool)}-sentence {split} pool of {lang!r}")
    return random.Random(key).sample(list(pool), n)
