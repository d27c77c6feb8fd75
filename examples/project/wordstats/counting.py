"""Word counts, printed as a table with tabulate (from requirements.txt)."""

from __future__ import annotations

import re
from collections import Counter

from tabulate import tabulate


def top_words(text: str, n: int = 5) -> str:
    counts = Counter(re.findall(r"[a-z']+", text.lower()))
    return tabulate(counts.most_common(n), headers=["word", "count"])
