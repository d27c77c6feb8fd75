"""The example project's entry point: imports its own package and a dependency from
requirements.txt, and reads a data file of the working directory."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from wordstats import top_words


def main() -> None:
    rank = os.environ.get("CORRAL_RANK", "0")
    text = Path("data/corpus.txt").read_text()
    print(f"replica {rank} on {socket.gethostname()}: the corpus has {len(text.split())} words")
    print(top_words(text, 3))
    print(f"replica {rank}: done")


if __name__ == "__main__":
    main()
