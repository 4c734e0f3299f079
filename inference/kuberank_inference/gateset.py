"""The FP8 quality gate's calibration set: fixed English queries, each with 20 documents (four
that answer it and sixteen from four other topics), 24 queries and 480 pairs in all. Fixed text,
no randomness, so the gate measures the same thing on every start and every machine; real
sentences, so a trained model (MiniLM) ranks them by meaning, and the ranks FP8 must keep are
both the clear ones (relevant first) and the fine ones among the sixteen unrelated documents.
"""

from __future__ import annotations

from dataclasses import dataclass

# (query, four passages that answer it)
_TOPICS: tuple[tuple[str, tuple[str, str, str, str]], ...] = (
    (
        "what is the capital of france",
        (
            "Paris is the capital and largest city of France.",
            "The French government, parliament and president sit in Paris.",
            "Paris has been the capital of France since the Middle Ages, apart from brief moves.",
            "Lyon and Marseille are large French cities, but the capital is Paris.",
        ),
    ),
    (
        "how do vaccines train the immune system",
        (
            "A vaccine shows the immune system a harmless piece or copy of a pathogen.",
            "After vaccination the body makes antibodies and memory cells against the germ.",
            "Memory B and T cells let the immune system respond faster on a real infection.",
            "mRNA vaccines instruct cells to make a viral protein that trains immunity.",
        ),
    ),
    (
        "why is the sky blue",
        (
            "Sunlight scatters off air molecules, and blue light scatters more than red.",
            "Rayleigh scattering grows strongly as the wavelength gets shorter.",
            "At sunset light crosses more air, the blue is scattered away and the sky turns red.",
            "The sky looks blue because short wavelengths are scattered across the whole sky.",
        ),
    ),
    (
        "how to bake sourdough bread at home",
        (
            "Feed your sourdough starter the day before so it is active and bubbly.",
            "Mix flour, water, salt and starter, then stretch and fold the dough over a few hours.",
            "Let the shaped loaf proof overnight in the fridge for a more sour flavour.",
            "Bake the loaf in a preheated Dutch oven, lid on first, then uncovered to brown.",
        ),
    ),
    (
        "symptoms of iron deficiency",
        (
            "Iron deficiency often causes tiredness, weakness and pale skin.",
            "People low in iron may feel short of breath and have cold hands and feet.",
            "Brittle nails, headaches and dizziness can be signs of anaemia from low iron.",
            "A blood test measuring ferritin shows whether the body's iron stores are low.",
        ),
    ),
    (
        "how does a jet engine work",
        (
            "A jet engine sucks in air, compresses it, burns fuel in it and blows it out the back.",
            "The turbine is driven by the hot exhaust gases and in turn drives the compressor.",
            "Thrust comes from accelerating a large mass of air backwards out of the nozzle.",
            "Turbofan engines move extra air around the core with a large front fan.",
        ),
    ),
    (
        "best way to learn a new language",
        (
            "Speaking with native speakers every day is one of the fastest ways to learn.",
            "Spaced repetition flashcards help you remember new vocabulary for a long time.",
            "Watching films and series in the language trains your listening comprehension.",
            "Short daily practice works better than long sessions once a week.",
        ),
    ),
    (
        "what causes earthquakes",
        (
            "Earthquakes happen when rocks along a fault suddenly slip past each other.",
            "Tectonic plates move slowly, and stress builds up where they meet until released.",
            "The energy released travels through the ground as seismic waves.",
            "Most large earthquakes occur along the boundaries of tectonic plates.",
        ),
    ),
    (
        "how to reduce stress at work",
        (
            "Taking short breaks during the day helps lower stress and restore focus.",
            "Setting clear priorities and saying no to extra tasks keeps workload manageable.",
            "Regular exercise and enough sleep make work stress easier to handle.",
            "Talking to your manager about unrealistic deadlines can reduce pressure.",
        ),
    ),
    (
        "history of the roman empire",
        (
            "The Roman Empire began in 27 BC when Augustus became the first emperor.",
            "At its height the empire stretched from Britain to Egypt and Mesopotamia.",
            "The western Roman Empire fell in 476 AD when the last emperor was deposed.",
            "The eastern half, the Byzantine Empire, lasted until Constantinople fell in 1453.",
        ),
    ),
    (
        "how do solar panels generate electricity",
        (
            "Solar panels are made of photovoltaic cells that turn sunlight into electricity.",
            "Light knocks electrons loose in silicon, and the electric field drives a current.",
            "An inverter converts the panels' direct current into alternating current.",
            "Panels produce the most power when they face the sun directly on clear days.",
        ),
    ),
    (
        "what do cats eat",
        (
            "Cats are obligate carnivores and need meat in their diet.",
            "A balanced cat food contains protein, fat, taurine and vitamins.",
            "Most adult cats do well on a mix of wet and dry commercial cat food.",
            "Milk upsets the stomach of many cats because they cannot digest lactose.",
        ),
    ),
    (
        "how to fix a leaking tap",
        (
            "Turn off the water supply under the sink before taking the tap apart.",
            "A dripping tap usually needs a new washer or O-ring inside the valve.",
            "Unscrew the handle and the valve cartridge, replace the worn seal and reassemble.",
            "Ceramic disc taps leak when the cartridge is worn and must be replaced whole.",
        ),
    ),
    (
        "what is machine learning",
        (
            "Machine learning is a field of computer science where programs learn from data.",
            "Instead of explicit rules, a model is fitted to examples and then makes predictions.",
            "Supervised learning trains on labelled examples, such as emails marked as spam.",
            "Neural networks are machine learning models loosely inspired by the brain.",
        ),
    ),
    (
        "how tall is mount everest",
        (
            "Mount Everest is about 8,849 metres tall, the highest mountain above sea level.",
            "Everest stands on the border between Nepal and the Tibet region of China.",
            "A 2020 survey measured the summit of Everest at 8,848.86 metres.",
            "Climbers need weeks to acclimatise before attempting the summit of Everest.",
        ),
    ),
    (
        "benefits of drinking water",
        (
            "Drinking enough water keeps the body hydrated and regulates temperature.",
            "Water helps the kidneys remove waste and prevents kidney stones.",
            "Even mild dehydration can cause headaches and poor concentration.",
            "Replacing sugary drinks with water lowers the calories you consume.",
        ),
    ),
    (
        "how do electric cars charge",
        (
            "Electric cars charge by plugging into a home outlet, a wall box or a public charger.",
            "Fast DC chargers can fill most of an electric car's battery in under an hour.",
            "Charging slows down as the battery approaches full to protect the cells.",
            "An on-board charger converts AC from the grid into DC for the car's battery.",
        ),
    ),
    (
        "who wrote romeo and juliet",
        (
            "Romeo and Juliet is a tragedy written by William Shakespeare.",
            "Shakespeare wrote the play early in his career, around 1595.",
            "The play tells of two young lovers from feuding families in Verona.",
            "Shakespeare based the plot on an Italian tale translated into English verse.",
        ),
    ),
    (
        "how to grow tomatoes",
        (
            "Tomatoes need full sun, at least six to eight hours of light a day.",
            "Plant tomato seedlings deep in rich, well-drained soil after the last frost.",
            "Water tomatoes regularly at the base and support the stems with stakes or cages.",
            "Pinching out side shoots helps cordon tomatoes put energy into fruit.",
        ),
    ),
    (
        "what is inflation in economics",
        (
            "Inflation is the rate at which the general level of prices rises over time.",
            "When inflation is high, each unit of money buys fewer goods and services.",
            "Central banks raise interest rates to slow down inflation.",
            "Inflation is often measured with a consumer price index of typical purchases.",
        ),
    ),
    (
        "how do bees make honey",
        (
            "Bees collect nectar from flowers and carry it back to the hive.",
            "Worker bees pass the nectar between them, adding enzymes that break down sugars.",
            "The bees fan the nectar with their wings to evaporate water until it thickens.",
            "Finished honey is stored in wax cells and sealed with a wax cap.",
        ),
    ),
    (
        "rules of chess for beginners",
        (
            "Each chess player starts with sixteen pieces: a king, a queen, two rooks, two "
            "bishops, two knights and eight pawns.",
            "The goal in chess is to checkmate the opponent's king so it cannot escape.",
            "Knights move in an L shape and are the only pieces that can jump over others.",
            "Castling moves the king two squares towards a rook, which jumps over to its side.",
        ),
    ),
    (
        "how does the internet route data",
        (
            "Data on the internet travels in small packets, each carrying its destination address.",
            "Routers read the destination IP address and forward each packet towards it.",
            "The Border Gateway Protocol lets networks announce which addresses they can reach.",
            "Packets of one message may take different paths and are reassembled at the end.",
        ),
    ),
    (
        "causes of climate change",
        (
            "Burning coal, oil and gas releases carbon dioxide that traps heat in the atmosphere.",
            "Deforestation adds to climate change because fewer trees absorb carbon dioxide.",
            "Methane from livestock, rice fields and leaks is a powerful greenhouse gas.",
            "Rising greenhouse gas concentrations have warmed the planet by over one degree.",
        ),
    ),
)

DOCUMENTS_PER_QUERY = 20
_OTHER_TOPICS = 4


@dataclass(frozen=True, slots=True)
class GateQuery:
    query: str
    documents: tuple[str, ...]
    relevant: int  # the first `relevant` documents answer the query


def gate_set() -> tuple[GateQuery, ...]:
    """Every query with its 20 documents: its own four, then four from each of the next four
    topics (in a fixed rotation, so every passage is an unrelated document four times)."""
    count = len(_TOPICS)
    queries = []
    for index, (query, own) in enumerate(_TOPICS):
        documents = list(own)
        for step in range(1, _OTHER_TOPICS + 1):
            documents.extend(_TOPICS[(index + step * 5) % count][1])
        queries.append(GateQuery(query=query, documents=tuple(documents), relevant=len(own)))
    return tuple(queries)
