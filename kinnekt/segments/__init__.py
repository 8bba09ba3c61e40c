"""Segments: rule definitions (validate, normalise) and the one compiler that turns them into a SELECT."""
from kinnekt.segments.compiler import compile_definition, count, matches_subscriber, members
from kinnekt.segments.rules import DefinitionError, has_relative_time, normalise, validate

__all__ = ["DefinitionError", "compile_definition", "count", "has_relative_time", "matches_subscriber", "members",
           "normalise", "validate"]
