"""The errors the library raises. Each message is one line a user can act on.

Every error is a `LoyaltyModelError` (a `ValueError`), so a caller can catch them all; the CLI
prints the message and exits with `exit_code` (2: the input, the request or the config is at
fault, nothing was written).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loyalty_model.contract import Problem


class LoyaltyModelError(ValueError):
    """Base of the library's errors."""

    exit_code = 2


class ConfigError(LoyaltyModelError):
    """The config cannot be loaded or is invalid."""


class ContractError(LoyaltyModelError):
    """Input data breaks the data contract. The message names table, column and values;
    `problems` holds every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        first = str(problems[0])
        more = f" (+{len(problems) - 1} more problems; run `loyalty-model validate`)"
        super().__init__(first + (more if len(problems) > 1 else ""))


class DataError(LoyaltyModelError):
    """The data satisfies the contract but cannot serve the request: a missing data directory,
    no closed campaign to train on, a split with an empty part."""


class RequestError(LoyaltyModelError):
    """A request the library cannot serve as asked: an unknown preset, brand or influencer, a
    bad as-of date, an output format we do not write, an output folder that would replace its
    input, a batch size below 1."""


class OutputError(LoyaltyModelError):
    """An output cannot be written: its parent folder is missing or read-only, the disk is
    full. Nothing is left behind (outputs are written to a temporary folder first)."""


class ModelError(LoyaltyModelError):
    """The model cannot be found, loaded or used: unknown URI or alias, a registry that is not
    there, a feature spec this package cannot build."""


class PromotionError(LoyaltyModelError):
    """The gate cannot decide: the candidate was compared with a champion that is no longer
    the champion."""
