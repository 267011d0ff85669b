"""The Engine interface: load one graph, run it on named numpy arrays."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np


class Engine(Protocol):
    """One loaded graph. Engines are created through ``pipeline.engines.create_engine``."""

    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph; ``inputs`` holds every input by name, outputs come back by name."""
        ...


class EngineFactory(Protocol):
    def __call__(self, path: Path, options: Mapping[str, object]) -> Engine:
        """Load the graph at ``path``; ``options`` come from the deployment config."""
        ...
