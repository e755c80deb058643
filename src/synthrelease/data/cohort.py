"""``Cohort``: an ordered, lazily loaded sequence of cases sharing one label schema, modality and channels."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from synthrelease.data.case import Case
from synthrelease.data.schema import LabelSchema, Modality
from synthrelease.errors import DataError

__all__ = ["CaseRef", "Cohort"]


@dataclass(frozen=True)
class CaseRef:
    """A case not yet loaded: its id and how to load it."""

    case_id: str
    load: Callable[[], Case]


def _identity(case: Case) -> Case:
    return case


class Cohort(Sequence[Case]):
    """Ordered cases, loaded one at a time on access (a large cohort never sits in memory whole).

    Every loaded case is checked against the cohort's schema, modality and channel names.
    """

    def __init__(
        self,
        refs: Sequence[CaseRef],
        *,
        schema: LabelSchema,
        modality: Modality | str,
        channel_names: Sequence[str],
        name: str = "cohort",
    ) -> None:
        ids = [r.case_id for r in refs]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise DataError(f"cohort {name!r} lists case ids more than once: {dupes[:5]}")
        self._refs = list(refs)
        self._index = {r.case_id: i for i, r in enumerate(self._refs)}
        self.schema = schema
        self.modality = Modality.parse(modality)
        self.channel_names = tuple(channel_names)
        self.name = name

    @classmethod
    def from_cases(cls, cases: Sequence[Case], *, name: str = "cohort") -> Cohort:
        """An in-memory cohort (small sets, tests). Schema, modality and channels come from the first case."""
        if not cases:
            raise DataError(f"cohort {name!r} is empty")
        first = cases[0]
        refs = [CaseRef(c.case_id, functools.partial(_identity, c)) for c in cases]
        return cls(refs, schema=first.schema, modality=first.modality, channel_names=first.channel_names, name=name)

    @property
    def case_ids(self) -> list[str]:
        return [r.case_id for r in self._refs]

    def __len__(self) -> int:
        return len(self._refs)

    def __getitem__(self, key: int | str) -> Case:  # type: ignore[override]
        if isinstance(key, str):
            if key not in self._index:
                raise KeyError(f"case {key!r} is not in cohort {self.name!r}")
            key = self._index[key]
        return self._check(self._refs[key].load())

    def __iter__(self) -> Iterator[Case]:
        for ref in self._refs:
            yield self._check(ref.load())

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def subset(self, case_ids: Sequence[str], *, name: str | None = None) -> Cohort:
        """The cohort restricted to ``case_ids``, in that order."""
        missing = [c for c in case_ids if c not in self._index]
        if missing:
            raise DataError(f"cases {missing[:5]} are not in cohort {self.name!r}")
        return Cohort([self._refs[self._index[c]] for c in case_ids], schema=self.schema, modality=self.modality,
                      channel_names=self.channel_names, name=name or self.name)

    def _check(self, case: Case) -> Case:
        where = f"cohort {self.name!r}, case {case.case_id}"
        if case.modality is not self.modality:
            raise DataError(f"modality {case.modality.value} differs from the cohort's {self.modality.value}",
                            where=where, fix="keep one modality per cohort")
        if case.channel_names != self.channel_names:
            raise DataError(f"channels {case.channel_names} differ from the cohort's {self.channel_names}",
                            where=where, fix="give every case the same channels in the same order")
        if case.schema != self.schema:
            unknown = [v for v in case.schema.values if v not in self.schema.values]
            if unknown:
                raise DataError(f"label schema {case.schema.labels} differs from the cohort's", where=where)
            case = case.with_(schema=self.schema)
        return case

    def __repr__(self) -> str:
        return (f"Cohort(name={self.name!r}, n={len(self)}, modality={self.modality.value}, "
                f"channels={list(self.channel_names)}, labels={self.schema.labels})")
