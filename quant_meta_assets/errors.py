"""One exception family, so callers can catch project errors without catching bugs.

Every error names the thing that is wrong (ticker, date, sleeve, constraint, field):
a traceback alone is never the message.
"""

from __future__ import annotations


class QuantMetaError(Exception):
    """Base class of every error this package raises on purpose."""


class PriceDataError(QuantMetaError, ValueError):
    """Price input is malformed: names the ticker and date when there is one."""


class RegistryError(QuantMetaError, ValueError):
    """The sleeve registry (YAML) is malformed or names something unknown."""


class StrategyOutputError(QuantMetaError, ValueError):
    """A strategy returned weights that cannot be traded (NaN, look-ahead, unknown tickers, gross
    exposure above the sleeve's max_gross...)."""


class SleeveBankruptError(StrategyOutputError):
    """A sleeve's NAV reached zero or below: it has lost its capital and never comes back."""


class InfeasibleConstraintsError(QuantMetaError, ValueError):
    """Optimizer bounds cannot be satisfied; raised before any solver runs."""


class OptimizationError(QuantMetaError, RuntimeError):
    """Every attempt of the fallback chain failed for a rebalance date."""


class ReconciliationError(QuantMetaError, AssertionError):
    """A forensic identity (flatten, budget, exposure) does not hold within tolerance."""


class StageInputError(QuantMetaError, ValueError):
    """An SDK stage was run without the MetaContext field it needs."""


class UnknownStageError(QuantMetaError, KeyError):
    """A stage id that the StageRegistry does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class SleeveFailureError(QuantMetaError, RuntimeError):
    """At least one sleeve failed: the meta-portfolio is never built on a partial set."""


class StorageError(QuantMetaError, OSError):
    """A stored artefact is missing, stale, or would be written outside the storage root."""


class LineageError(QuantMetaError, ValueError):
    """Outputs that would be combined or published come from different inputs (another prices
    snapshot, another sleeve bundle, another run's upstream output): names each disagreement."""


class StalePricesError(PriceDataError):
    """The price file does not reach the session a scheduled run is for (a late vendor file)."""
