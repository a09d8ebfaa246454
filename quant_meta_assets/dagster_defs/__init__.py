"""Dagster definitions: thin drivers over the pure core (one implementation per stage)."""

import warnings

import dagster as dg

# The beta APIs this code location uses on purpose, each named (any other beta or preview warning,
# and every other warning, still shows): a newcomer cannot act on these.
OUR_BETA_USAGE = (
    r"Function `observable_source_asset`",  # prices.py: the price file's hash as its data version
    r"Parameter `backfill_policy` of function `asset`",  # sleeves.py: all partitions in one step
    r"Parameter `data_version` of initializer `Output.__init__`",  # content hashes as data versions
)
for _usage in OUR_BETA_USAGE:
    warnings.filterwarnings("ignore", message=_usage + " is currently in beta", category=dg.BetaWarning)
