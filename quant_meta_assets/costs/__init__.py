"""The book's economics, one concept per module (pure core: no dagster, no ray).

* ``cost_model``: what a trade and a position cost, per asset (half-spread, square-root impact,
  borrow fee, funding spread) and where the inputs come from (``QUANT_META_COSTS`` CSV, env).
* ``financing``: the daily holding cost of a book of weights (borrow on shorts, funding on leverage).
* ``capacity``: the book's Sharpe and cost drag against its AUM when average daily volumes are known.
"""

from quant_meta_assets.costs.cost_model import CostModel, load_cost_model
from quant_meta_assets.costs.financing import holding_cost

__all__ = ["CostModel", "holding_cost", "load_cost_model"]
