"""The Engine interface: load one graph, run it on named numpy arrays; and the base of every
engine's own config model (one frozen pydantic model per engine, declared in its module)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import EngineError


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


class EngineOptions(BaseModel):
    """Base of the per-engine config models: frozen, unknown options rejected (with their YAML path).

    Each engine module declares ``class XConfig(EngineOptions)`` with ``name: Literal["x"]``;
    ``pipeline.engines.EngineConfig`` is the union of them, discriminated on ``name``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def options(self) -> dict[str, object]:
        """The options an engine factory takes (everything but ``name``)."""
        return self.model_dump(exclude={"name"})


OptionsT = TypeVar("OptionsT", bound=EngineOptions)


def parse_options(model: type[OptionsT], name: str, options: Mapping[str, object]) -> OptionsT:
    """Options given in code (not through the config file) validated by the engine's model."""
    try:
        return model.model_validate({"name": name, **options})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise EngineError(f"engine {name!r}: bad options ({problems})") from exc
