"""A small deterministic all-pairs (pairwise) generator under constraints, for tests/test_combinations.py.

A space is a set of factors, each with a few values, and a `valid` predicate on full assignments (a value for every
factor): here, whether ltgen.spec.parse accepts the spec they make. A pair is two values of two different factors.
A pair is *allowed* when some valid assignment holds it; `covering_set` returns valid assignments that together
hold every allowed pair, built greedily (AETG-style): each new assignment starts from the first pair not yet
covered (or a seed given in advance) and takes, factor by factor, the value that covers the most new pairs while
a valid completion still exists.

Completions are searched from a baseline (each factor's first value) by changing up to `depth` other factors, in
a fixed order: the search is deterministic, and a pair it cannot complete is reported as forbidden (the caller
pins the forbidden pairs it expects, so a search too shallow for a changed rule shows up as a failure).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence

Value = tuple[str, str]  # (factor, value)
Pair = tuple[Value, Value]  # the first factor comes before the second in the space's order
Assignment = dict[str, str]  # factor -> value, for every factor (or some, when partial)


class Space:
    """Factors (name -> values, the first value the baseline) and the predicate that says which are valid."""

    def __init__(
        self, factors: Mapping[str, Sequence[str]], valid: Callable[[Assignment], bool], depth: int = 2
    ) -> None:
        self.factors = {name: tuple(values) for name, values in factors.items()}
        self.order = {name: index for index, name in enumerate(self.factors)}
        self.depth = depth
        self._valid = functools.cache(lambda items: valid(dict(items)))
        self._completions: dict[tuple[Value, ...], Assignment | None] = {}

    def valid(self, assignment: Mapping[str, str]) -> bool:
        """Whether the full assignment is valid (memoized)."""
        return self._valid(tuple(sorted(assignment.items(), key=lambda item: self.order[item[0]])))

    def pair(self, a: Value, b: Value) -> Pair:
        """The pair of two values, in the space's factor order."""
        return (a, b) if self.order[a[0]] < self.order[b[0]] else (b, a)

    def all_pairs(self) -> list[Pair]:
        """Every pair of values of two different factors, in factor order."""
        return [
            ((f, a), (g, b))
            for f, g in itertools.combinations(self.factors, 2)
            for a in self.factors[f]
            for b in self.factors[g]
        ]

    def pairs_of(self, assignment: Mapping[str, str]) -> set[Pair]:
        """The pairs an assignment (full or partial) holds."""
        items = sorted(assignment.items(), key=lambda item: self.order[item[0]])
        return set(itertools.combinations(items, 2))

    def complete(self, partial: Mapping[str, str]) -> Assignment | None:
        """A valid full assignment that extends `partial`: the baseline for the other factors, or it with up to
        `depth` of them changed (fewest changes first, in factor and value order); None if there is none so near."""
        key = tuple(sorted(partial.items(), key=lambda item: self.order[item[0]]))
        if key not in self._completions:
            self._completions[key] = self._search(dict(partial))
        found = self._completions[key]
        return None if found is None else dict(found)

    def _search(self, fixed: dict[str, str]) -> Assignment | None:
        baseline = {name: fixed.get(name, values[0]) for name, values in self.factors.items()}
        free = [name for name in self.factors if name not in fixed]
        for changes in range(self.depth + 1):
            for changed in itertools.combinations(free, changes):
                for values in itertools.product(*(self.factors[name][1:] for name in changed)):
                    candidate = {**baseline, **dict(zip(changed, values, strict=True))}
                    if self.valid(candidate):
                        return candidate
        return None

    def allowed_pairs(self) -> list[Pair]:
        """The pairs some valid assignment holds (as far as `complete` searches), in factor order."""
        return [pair for pair in self.all_pairs() if self.complete(dict(pair)) is not None]

    def covering_set(self, seeds: Sequence[Mapping[str, str]] = ()) -> list[Assignment]:
        """Valid assignments that together hold every allowed pair; the first ones extend `seeds`, in order."""
        allowed = self.allowed_pairs()
        allowed_set = set(allowed)
        uncovered = set(allowed)
        cases: list[Assignment] = []
        for start in _starts(seeds, allowed, uncovered):
            partial = dict(start)
            assert self.complete(partial) is not None, f"no valid assignment extends {partial}"
            for name, values in self.factors.items():
                if name in partial:
                    continue
                gains = {
                    value: sum(self.pair((name, value), (f, v)) in uncovered for f, v in partial.items())
                    for value in values
                }
                for value in sorted(values, key=lambda value: -gains[value]):  # stable: value order breaks ties
                    pairs = {self.pair((name, value), item) for item in partial.items()}
                    if pairs <= allowed_set and self.complete({**partial, name: value}) is not None:
                        partial[name] = value
                        break
            assert self.valid(partial), partial
            cases.append(partial)
            uncovered -= self.pairs_of(partial)
        return cases


def _starts(seeds: Sequence[Mapping[str, str]], allowed: list[Pair], uncovered: set[Pair]) -> Iterator[dict[str, str]]:
    """The seeds, then the first allowed pair still uncovered, until none is (`uncovered` shrinks as cases are made)."""
    yield from (dict(seed) for seed in seeds)
    while uncovered:
        yield dict(next(pair for pair in allowed if pair in uncovered))
