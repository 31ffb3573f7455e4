"""The project's own question set for Ask (bench.answers, tests): documents of invented facts (a model cannot know
them), questions whose answer is in exactly one document (with the words the answer must hold), questions whose
fact is in no document although documents on the same topic exist, and facts changed by a new version."""

from __future__ import annotations

from dataclasses import dataclass

DOCS = {
    "choir.md": "The Orrin Valley choir has 42 members. It rehearses every Thursday evening in the old mill, and its "
    "conductor is Marta Velasquez.",
    "server-room.md": "The access code for the server room is 4417. The server room is on the third floor, next to "
    "the kitchen, and only the operations team may enter it.",
    "ferry.md": "The ferry from Lindholm to Skarra leaves at 7:40 every morning. The crossing takes 55 minutes and a "
    "return ticket costs 18 euros.",
    "clock-tower.md": "The Ashgrove clock tower is 31 metres tall. It was finished in 1887 and its bell weighs two "
    "tonnes.",
    "retention.md": "Topic retention in the Brindle cluster is 9 days for raw events. Compacted topics keep the last "
    "value of each key forever.",
    "bakery.md": "Hollis Bakery bakes its rye loaves with a starter called Old Tom. The loaves are baked at 240 "
    "degrees for 50 minutes.",
    "lighthouse.md": "The Kestrel Point lighthouse flashes white every 12 seconds. Its keeper, Anders Holm, lives in "
    "the cottage at its foot.",
    "incident.md": "Incident F-2307 was caused by a full disk on broker 3. It was fixed by raising the disk size to "
    "2 TB and lasted 47 minutes.",
    "garden.md": "The Fenwick community garden has 64 plots. Each plot rents for 30 pounds a year, and the waiting "
    "list opens in March.",
    "printer.md": "The office printer on floor two is called Heron. Its toner is replaced every six weeks by the "
    "facilities team.",
    "library.md": "The Marlow library lends books for 21 days. A late book costs 20 cents a day, and the library is "
    "closed on Mondays.",
    "rocket.md": "The Vesta-2 rocket reached an altitude of 86 kilometres on its second flight. Its engine burned for "
    "71 seconds.",
}


@dataclass(frozen=True)
class Question:
    question: str
    doc: str  # the document that answers it ("" when none does)
    words: tuple[str, ...] = ()  # an answer must hold each (lower-case)


ANSWERED = (
    Question("How many members does the Orrin Valley choir have?", "choir.md", ("42",)),
    Question("Who conducts the Orrin Valley choir?", "choir.md", ("marta",)),
    Question("What is the access code of the server room?", "server-room.md", ("4417",)),
    Question("On which floor is the server room?", "server-room.md", ("third",)),
    Question("When does the ferry from Lindholm to Skarra leave?", "ferry.md", ("7:40",)),
    Question("How much is a return ticket for the Skarra ferry?", "ferry.md", ("18",)),
    Question("How tall is the Ashgrove clock tower?", "clock-tower.md", ("31",)),
    Question("When was the Ashgrove clock tower finished?", "clock-tower.md", ("1887",)),
    Question("How long are raw events kept in the Brindle cluster?", "retention.md", ("9 days",)),
    Question("At what temperature does Hollis Bakery bake its rye?", "bakery.md", ("240",)),
    Question("How often does the Kestrel Point lighthouse flash?", "lighthouse.md", ("12",)),
    Question("What caused incident F-2307?", "incident.md", ("disk",)),
    Question("How many plots does the Fenwick community garden have?", "garden.md", ("64",)),
    Question("What is the name of the printer on floor two?", "printer.md", ("heron",)),
    Question("For how many days does the Marlow library lend books?", "library.md", ("21",)),
    Question("What altitude did the Vesta-2 rocket reach?", "rocket.md", ("86",)),
)
ABSENT = (  # the topic is there, the fact is not
    Question("What is the phone number of the Orrin Valley choir?", ""),
    Question("What is the Wi-Fi password of the server room?", ""),
    Question("Is there a ferry from Skarra to Norvik?", ""),
    Question("Who designed the Ashgrove clock tower?", ""),
    Question("What is the retention of compacted topics in the Wexford cluster?", ""),
    Question("What does Hollis Bakery charge for a rye loaf?", ""),
    Question("How many lighthouses are on the Kestrel coast?", ""),
    Question("Who won the 2018 FIFA World Cup?", ""),
    Question("What is the capital of Zentara?", ""),
    Question("How many moons does the planet Orrin have?", ""),
)


@dataclass(frozen=True)
class Change:
    doc: str
    new_text: str
    question: str
    old_word: str  # the fact of the first version: an answer holding it after the change is stale
    new_word: str


CHANGES = (
    Change(
        "server-room.md",
        "The access code for the server room is 9051. The server room is on the third floor, next to the kitchen.",
        "What is the access code of the server room?",
        "4417",
        "9051",
    ),
    Change(
        "choir.md",
        "The Orrin Valley choir has 57 members. It rehearses every Thursday evening in the old mill.",
        "How many members does the Orrin Valley choir have?",
        "42",
        "57",
    ),
    Change(
        "ferry.md",
        "The ferry from Lindholm to Skarra leaves at 8:15 every morning. The crossing takes 55 minutes.",
        "When does the ferry from Lindholm to Skarra leave?",
        "7:40",
        "8:15",
    ),
)
