"""What the adapter tests share: a small real corpus, funnels, a loop-recording score function.

The corpus is 20 short encyclopaedic paragraphs on distinct topics (written for these tests), so
each query below has one clearly relevant paragraph among near-topic distractors.
"""

from __future__ import annotations

import functools
import importlib.util
import threading

import pytest
from llmrerank import Funnel
from llmrerank.testing import ScriptedScorer

CORPUS: dict[str, str] = {
    "photosynthesis": "Photosynthesis is the process by which green plants use sunlight, water and "
    "carbon dioxide to make glucose, storing the light's energy as chemical energy and releasing "
    "oxygen.",
    "respiration": "Cellular respiration breaks glucose down inside mitochondria, releasing the "
    "chemical energy stored in it as ATP and giving off carbon dioxide and water.",
    "chlorophyll": "Chlorophyll is the green pigment in plant leaves; it absorbs red and blue light "
    "and reflects green light, which is why most leaves look green.",
    "tides": "Ocean tides are caused mainly by the gravitational pull of the Moon on the Earth's "
    "oceans, with a smaller contribution from the Sun; most coasts see two high tides a day.",
    "moon_phases": "The phases of the Moon, from new moon to full moon and back, follow from how "
    "much of its sunlit half faces the Earth during its 29.5-day orbit.",
    "volcano": "A volcano forms where molten rock, called magma, rises through the Earth's crust and "
    "erupts as lava, ash and gas, often at the boundaries of tectonic plates.",
    "earthquake": "Earthquakes happen when stress built up along a fault is suddenly released, "
    "sending seismic waves through the ground; their size is given on the moment magnitude scale.",
    "python_files": "In Python, the simplest way to read a text file line by line is to open it "
    "with a with statement and iterate over the file object in a for loop.",
    "python_lists": "Python lists are ordered, mutable sequences; append adds one item at the end, "
    "extend adds many, and sort orders the list in place.",
    "sql_join": "An SQL inner join returns the rows of two tables that have matching values in the "
    "joined columns; a left join also keeps the unmatched rows of the left table.",
    "http_status": "The HTTP status code 404 means the server could not find the requested "
    "resource, while 500 signals an internal server error.",
    "bread": "Bread rises because yeast ferments the sugars in the dough, producing carbon dioxide "
    "gas that gets trapped in the gluten network and makes the loaf light.",
    "coffee": "Coffee beans are the roasted seeds of the coffee plant; roasting turns them brown "
    "and develops the aromatic oils that give brewed coffee its flavour.",
    "marathon": "A marathon is a long-distance running race of 42.195 kilometres, named after the "
    "legend of a Greek messenger who ran from Marathon to Athens.",
    "chess": "In chess, castling moves the king two squares towards a rook and places the rook on "
    "the square the king crossed; it is allowed only if neither piece has moved.",
    "rainbow": "A rainbow appears when sunlight is refracted, reflected and dispersed inside "
    "raindrops, splitting white light into its colours in an arc opposite the Sun.",
    "vaccines": "Vaccines train the immune system by exposing it to a harmless piece or weakened "
    "form of a pathogen, so that it can recognise and fight the real infection later.",
    "bees": "Honey bees make honey from flower nectar, which they collect, partly digest and store "
    "in wax honeycomb cells, fanning it with their wings until the water evaporates.",
    "glaciers": "Glaciers are large, slow-moving masses of ice formed from compacted snow; as they "
    "flow downhill they carve valleys into U shapes.",
    "inflation": "Inflation is the rate at which the general level of prices rises, reducing the "
    "purchasing power of money; central banks raise interest rates to slow it.",
}

QUERIES: dict[str, str] = {
    "How do plants turn sunlight into chemical energy?": "photosynthesis",
    "What causes the tides in the ocean?": "tides",
    "how to read a text file line by line in python": "python_files",
    "Why does bread dough rise?": "bread",
}


def local_llm_available() -> bool:
    """Whether the embedded LLM scorer (issue 3: llmrerank.scorers.llm_local) is installed."""
    return importlib.util.find_spec("llmrerank.scorers.llm_local") is not None


requires_local_llm = pytest.mark.skipif(
    not local_llm_available(),
    reason="the embedded LLM scorer llmrerank.scorers.llm_local.LocalLLMScorer is not on this "
    "branch yet (issue 3); the real-LLM adapter tests run once it is",
)


def overlap_scorer(latency: float = 0.0) -> ScriptedScorer:
    """A scripted second stage: scores by query-word overlap (a stand-in for timing tests)."""
    return ScriptedScorer(latency=latency, name=f"overlap-{latency}")


class LoopRecorder:
    """A score function that records the event loop and thread each score was computed on."""

    def __init__(self) -> None:
        self.loops: set[int] = set()
        self.threads: set[int] = set()

    def __call__(self, query: str, text: str) -> float:
        import asyncio

        self.loops.add(id(asyncio.get_running_loop()))
        self.threads.add(threading.get_ident())
        words = set(query.lower().split())
        return float(sum(w in words for w in text.lower().split()))


@functools.cache
def shared_llm_funnel() -> Funnel:
    """The enterprise preset with the embedded LLM, LLM window 3 (SmolLM2 on 2 CPU cores); one
    per session, so the model loads once."""
    if not local_llm_available():
        pytest.skip(str(requires_local_llm.kwargs["reason"]))
    return Funnel.from_preset("enterprise", k=3, deadline=120.0)
