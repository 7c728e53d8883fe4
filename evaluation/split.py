"""The held-out split every trainer and evaluator agrees on, and the validation split adapting stops on
(defined in engine/split_rule.py, which the engine's blend chooser reads too)."""

from __future__ import annotations

from kuamo.engine.split_rule import (
    HELD_OUT_PERCENT,
    SPLIT_RULE,
    VALIDATION_PERCENT,
    VALIDATION_RULE,
    is_held_out,
    is_validation,
)

__all__ = ["HELD_OUT_PERCENT", "SPLIT_RULE", "VALIDATION_PERCENT", "VALIDATION_RULE", "is_held_out", "is_validation"]
