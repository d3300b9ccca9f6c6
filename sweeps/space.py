"""Search-space dimensions of a sweep spec: what each one means to Tune, Optuna and validation.

A dimension is written in YAML as a one-key mapping::

    lambda_esp: {grid: [0, 0.5, 1, 2, 4]}      # every value, crossed with the other grids
    local_k: {choice: [5, 10, 15]}              # sampled
    alpha: {uniform: [0.0, 2.0]}                # sampled, low <= x <= high
    lr: {loguniform: [1.0e-6, 1.0e-4]}          # sampled, log scale, 0 < low
    local_k: {int: [5, 30]}                     # sampled integer, low <= k <= high

Grid dimensions are enumerated (Tune ``grid_search``); the others are sampled ``num_samples``
times. Optuna searchers treat a grid like a choice (Optuna has no grid inside TPE/NSGA-II).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterator, Mapping, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Dimension", "Grid", "Choice", "Uniform", "LogUniform", "IntRange", "KINDS", "parse_dimension",
           "to_tune", "to_optuna", "corner_values", "enumerate_combinations", "grid_size"]

Scalar = Union[bool, int, float, str, None, list]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Grid(_Strict):
    grid: list[Scalar] = Field(min_length=1)


class Choice(_Strict):
    choice: list[Scalar] = Field(min_length=1)


class _Range(_Strict):
    @model_validator(mode="after")
    def _ordered(self):
        low, high = self.bounds
        if not low <= high:
            raise ValueError(f"low={low} must be <= high={high}")
        return self


class Uniform(_Range):
    uniform: tuple[float, float]

    @property
    def bounds(self) -> tuple[float, float]:
        return self.uniform


class LogUniform(_Range):
    loguniform: tuple[float, float]

    @property
    def bounds(self) -> tuple[float, float]:
        return self.loguniform

    @model_validator(mode="after")
    def _positive(self):
        if self.loguniform[0] <= 0:
            raise ValueError(f"low={self.loguniform[0]} must be > 0 on a log scale")
        return self


class IntRange(_Range):
    int: tuple[int, int]

    @property
    def bounds(self) -> tuple[int, int]:
        return self.int


Dimension = Union[Grid, Choice, Uniform, LogUniform, IntRange]
KINDS: dict[str, type[BaseModel]] = {"grid": Grid, "choice": Choice, "uniform": Uniform,
                                     "loguniform": LogUniform, "int": IntRange}


def parse_dimension(name: str, raw: Any) -> Dimension:
    """``{"grid": [...]}`` -> :class:`Grid`; raises ``ValueError`` naming the dimension."""
    import difflib

    from pydantic import ValidationError

    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ValueError(f"space.{name}={raw!r}: write one of " + ", ".join(
            f"{{{k}: ...}}" for k in KINDS) + ", e.g. {grid: [0, 0.5, 1]}")
    kind = next(iter(raw))
    if kind not in KINDS:
        close = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"space.{name}: unknown kind '{kind}'{hint}; kinds: {', '.join(KINDS)}")
    try:
        return KINDS[kind](**raw)
    except ValidationError as exc:
        msgs = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ValueError(f"space.{name}={dict(raw)!r}: {msgs}") from None


def to_tune(dim: Dimension) -> Any:
    """The Ray Tune domain for a dimension."""
    from ray import tune

    if isinstance(dim, Grid):
        return tune.grid_search(list(dim.grid))
    if isinstance(dim, Choice):
        return tune.choice(list(dim.choice))
    if isinstance(dim, Uniform):
        return tune.uniform(*dim.uniform)
    if isinstance(dim, LogUniform):
        return tune.loguniform(*dim.loguniform)
    return tune.randint(dim.int[0], dim.int[1] + 1)  # randint's upper bound is exclusive


def to_optuna(dim: Dimension) -> Any:
    """The Optuna distribution for a dimension (a grid becomes a categorical)."""
    from optuna import distributions as d

    if isinstance(dim, (Grid, Choice)):
        values = dim.grid if isinstance(dim, Grid) else dim.choice
        return d.CategoricalDistribution([tuple(v) if isinstance(v, list) else v for v in values])
    if isinstance(dim, Uniform):
        return d.FloatDistribution(*dim.uniform)
    if isinstance(dim, LogUniform):
        return d.FloatDistribution(*dim.loguniform, log=True)
    return d.IntDistribution(*dim.int)


def corner_values(dim: Dimension) -> list[Any]:
    """Values validation must try: every grid/choice value, the two ends of a range."""
    if isinstance(dim, Grid):
        return list(dim.grid)
    if isinstance(dim, Choice):
        return list(dim.choice)
    low, high = dim.bounds
    return [low] if low == high else [low, high]


def grid_size(space: Mapping[str, Dimension]) -> int:
    """Number of grid points (1 without grid dimensions)."""
    return math.prod(len(d.grid) for d in space.values() if isinstance(d, Grid))


def enumerate_combinations(space: Mapping[str, Dimension]) -> Iterator[dict[str, Any]]:
    """Every combination of :func:`corner_values` (grid points x range ends x choices)."""
    names = list(space)
    for values in itertools.product(*(corner_values(space[n]) for n in names)):
        yield dict(zip(names, values))

