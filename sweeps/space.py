"""Search-space dimensions of a sweep spec: what each one means to Tune, Optuna and validation.

A dimension is written in YAML as a one-key mapping whose key is its kind::

    lambda_esp: {grid: [0, 0.5, 1, 2, 4]}      # every value, crossed with the other grids
    local_k: {choice: [5, 10, 15]}              # sampled
    alpha: {uniform: [0.0, 2.0]}                # sampled, low <= x <= high
    lr: {loguniform: [1.0e-6, 1.0e-4]}          # sampled, log scale, 0 < low
    local_k: {int: [5, 30]}                     # sampled integer, low <= k <= high

:data:`SpaceDimension` is the discriminated union of these models (the discriminator is that
key), so a spec's ``space`` is validated by pydantic with the rest of the spec. Grid dimensions
are enumerated (Tune ``grid_search``); the others are sampled ``num_samples`` times. Optuna
searchers treat a grid like a choice (Optuna has no grid inside TPE/NSGA-II).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from sage_core.defs.errors import ConfigError, FieldProblem, did_you_mean, format_validation_error
from sage_core.defs.strict_values import STRICT_MODEL

__all__ = ["Dimension", "SpaceDimension", "Grid", "Choice", "Uniform", "LogUniform", "IntRange", "KINDS",
           "parse_dimension", "to_tune", "to_optuna", "corner_values", "enumerate_combinations", "grid_size",
           "finite_points", "discrete_values", "FINITE_LIMIT"]

Scalar = bool | int | float | str | None | list


class _Strict(BaseModel):
    """A dimension: one field named after its kind; what it means to Tune, Optuna and validation."""

    model_config = STRICT_MODEL
    kind: ClassVar[str]

    def to_tune(self) -> Any:
        """The Ray Tune domain."""
        raise NotImplementedError

    def to_optuna(self) -> Any:
        """The Optuna distribution."""
        raise NotImplementedError

    def corner_values(self) -> list[Any]:
        """Values validation must try."""
        raise NotImplementedError


class _Values(_Strict):
    @property
    def values(self) -> list[Any]:
        return list(getattr(self, self.kind))

    def to_optuna(self) -> Any:
        from optuna.distributions import CategoricalDistribution  # lazy: optuna (~0.1 s), off `sage` start-up

        # a list value becomes a tuple (hashable): optuna takes it, though its type names only scalars
        return CategoricalDistribution([tuple(v) if isinstance(v, list) else v  # type: ignore[misc]
                                        for v in self.values])

    def corner_values(self) -> list[Any]:
        return self.values


class Grid(_Values):
    """Every value, crossed with the other grids (Optuna: a categorical; it has no grid in TPE/NSGA-II)."""

    kind: ClassVar[str] = "grid"
    grid: list[Scalar] = Field(min_length=1)

    def to_tune(self) -> Any:
        from ray import tune  # lazy: ray (~0.7 s), off `sage` start-up

        return tune.grid_search(self.values)


class Choice(_Values):
    kind: ClassVar[str] = "choice"
    choice: list[Scalar] = Field(min_length=1)

    def to_tune(self) -> Any:
        from ray import tune  # lazy: ray (~0.7 s), off `sage` start-up

        return tune.choice(self.values)


class _Range(_Strict):
    @property
    def bounds(self) -> tuple[Any, Any]:
        return getattr(self, self.kind)

    @model_validator(mode="after")
    def _ordered(self):
        low, high = self.bounds
        if not low <= high:
            raise FieldProblem(f"low={low} must be <= high={high}")
        return self

    def corner_values(self) -> list[Any]:
        low, high = self.bounds
        return [low] if low == high else [low, high]


class Uniform(_Range):
    kind: ClassVar[str] = "uniform"
    uniform: tuple[float, float]

    def to_tune(self) -> Any:
        from ray import tune  # lazy: ray (~0.7 s), off `sage` start-up

        return tune.uniform(*self.bounds)

    def to_optuna(self) -> Any:
        from optuna.distributions import FloatDistribution  # lazy: optuna (~0.1 s), off `sage` start-up

        return FloatDistribution(*self.bounds)


class LogUniform(_Range):
    kind: ClassVar[str] = "loguniform"
    loguniform: tuple[float, float]

    @model_validator(mode="after")
    def _positive(self):
        if self.loguniform[0] <= 0:
            raise FieldProblem(f"low={self.loguniform[0]} must be > 0 on a log scale")
        return self

    def to_tune(self) -> Any:
        from ray import tune  # lazy: ray (~0.7 s), off `sage` start-up

        return tune.loguniform(*self.bounds)

    def to_optuna(self) -> Any:
        from optuna.distributions import FloatDistribution  # lazy: optuna (~0.1 s), off `sage` start-up

        return FloatDistribution(*self.bounds, log=True)


class IntRange(_Range):
    kind: ClassVar[str] = "int"
    int: tuple[int, int]

    def to_tune(self) -> Any:
        from ray import tune  # lazy: ray (~0.7 s), off `sage` start-up

        return tune.randint(self.bounds[0], self.bounds[1] + 1)  # randint's upper bound is exclusive

    def to_optuna(self) -> Any:
        from optuna.distributions import IntDistribution  # lazy: optuna (~0.1 s), off `sage` start-up

        return IntDistribution(*self.bounds)


Dimension = Grid | Choice | Uniform | LogUniform | IntRange
KINDS: dict[str, type[_Strict]] = {m.kind: m for m in (Grid, Choice, Uniform, LogUniform, IntRange)}


def _kind_of(value: Any) -> str | None:
    """The discriminator: the one key of the mapping (or the kind of a dimension already built)."""
    if isinstance(value, _Strict):
        return value.kind
    return next(iter(value), None) if isinstance(value, Mapping) else None


def _one_known_kind(value: Any) -> Any:
    """A dimension is a one-key mapping whose key is a known kind; said here with the kinds listed."""
    if isinstance(value, _Strict):
        return value
    if not isinstance(value, Mapping) or len(value) != 1:
        raise FieldProblem("write one of " + ", ".join(f"{{{k}: ...}}" for k in KINDS) + ", e.g. {grid: [0, 0.5, 1]}")
    kind = next(iter(value))
    if kind not in KINDS:
        raise FieldProblem(f"unknown kind '{kind}'{did_you_mean(kind, KINDS)}; kinds: {', '.join(KINDS)}")
    return value


# The tagged union pydantic validates (the discriminator reads the mapping's one key), spelled out so
# that a type checker sees the same union as Dimension.
SpaceDimension = Annotated[
    Annotated[Grid, Tag(Grid.kind)] | Annotated[Choice, Tag(Choice.kind)] | Annotated[Uniform, Tag(Uniform.kind)]
    | Annotated[LogUniform, Tag(LogUniform.kind)] | Annotated[IntRange, Tag(IntRange.kind)],
    Discriminator(_kind_of), BeforeValidator(_one_known_kind)]
_NAMED = TypeAdapter(dict[str, SpaceDimension])


def parse_dimension(name: str, raw: Any) -> Dimension:
    """``{"grid": [...]}`` -> :class:`Grid`; raises :class:`ConfigError` naming ``space.<name>``."""
    try:
        return _NAMED.validate_python({name: raw})[name]
    except ValidationError as exc:
        raise ConfigError([f"space.{line}" for line in format_validation_error(exc)]) from None


def to_tune(dim: Dimension) -> Any:
    """The Ray Tune domain for a dimension."""
    return dim.to_tune()


def to_optuna(dim: Dimension) -> Any:
    """The Optuna distribution for a dimension (a grid becomes a categorical)."""
    return dim.to_optuna()


def corner_values(dim: Dimension) -> list[Any]:
    """Values validation must try: every grid/choice value, the two ends of a range."""
    return dim.corner_values()


def grid_size(space: Mapping[str, Dimension]) -> int:
    """Number of grid points (1 without grid dimensions)."""
    return math.prod(len(d.grid) for d in space.values() if isinstance(d, Grid))


FINITE_LIMIT = 100_000  # a space with at most this many configurations is enumerated


def discrete_values(dims: Mapping[str, Dimension]) -> dict[str, Sequence[Any]] | None:
    """Each dimension's values (an integer range as a ``range``) when every dimension is a grid, choice
    or integer range; None when one is a float range (infinitely many configurations)."""
    out: dict[str, Sequence[Any]] = {}
    for name, dim in dims.items():
        if isinstance(dim, IntRange):
            out[name] = range(dim.bounds[0], dim.bounds[1] + 1)
        elif isinstance(dim, _Values):
            out[name] = dim.values
        else:
            return None
    return out


def finite_points(dims: Mapping[str, Dimension]) -> list[dict[str, Any]] | None:
    """Every configuration of a space whose dimensions are all grids, choices or integer ranges, when
    there are at most :data:`FINITE_LIMIT`; else None."""
    values = discrete_values(dims)
    if values is None or math.prod(len(v) for v in values.values()) > FINITE_LIMIT:
        return None
    return [dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())]


def enumerate_combinations(space: Mapping[str, Dimension]) -> Iterator[dict[str, Any]]:
    """Every combination of :func:`corner_values` (grid points x range ends x choices)."""
    names = list(space)
    for values in itertools.product(*(corner_values(space[n]) for n in names)):
        yield dict(zip(names, values, strict=True))

