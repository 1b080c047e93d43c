"""The event types a rule can meet, and the fields of each one's `data`.

`cloudpilot check` reads this to refuse a rule that could never fire (`on:` a type no source
emits) or a template field that can never exist (`{{ event.dta.type }}`), with a did-you-mean;
`cloudpilot schema` lists the types for editors. It is plain data, so the rule model can read
it without importing the providers; a test runs every source against the simulator and holds
what they emit to it, so it cannot drift from the code.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

#: What every event has, whatever its type (`event.<field>` in templates and CEL).
EVENT_FIELDS = ("type", "key", "time", "resource", "data")

#: What a bill's event holds, whichever provider's bill it is.
BILL_FIELDS = ("month", "total", "previous_total", "billed_until")


@dataclass(frozen=True, slots=True)
class EventType:
    """One event type (or a family, `k8sgpu.event.*`) and the fields its `data` holds."""

    name: str
    fields: tuple[str, ...]
    about: str

    def matches(self, event_type: str) -> bool:
        """Return whether a concrete event type belongs to this entry."""
        return fnmatch.fnmatchcase(event_type, self.name)


#: What Cloudpilot's own sources say, whatever the provider.
GAP = EventType(
    "cloudpilot.gap",
    ("source", "after_id", "before_id", "detail"),
    "a source may have missed events the provider no longer lists",
)

_SCALING = (
    "rule",
    "provider",
    "server",
    "current_cores",
    "target_cores",
    "direction",
    "reason",
    "cpu_percent",
)

#: Events the policies raise alerts on: `resolve.on` may name them too.
POLICY_EVENTS: tuple[EventType, ...] = (
    EventType("autoscale.resize", _SCALING, "an autoscale rule resized a server"),
    EventType(
        "autoscale.recommendation",
        (
            *_SCALING,
            "plan",
            "current_plan",
            "recommended_cores",
            "price_difference_euros",
            "summary",
            "detail",
        ),
        "an autoscale rule advises a plan change",
    ),
    EventType(
        "budget.warning",
        (
            "rule",
            "month",
            "kind",
            "threshold",
            "cap",
            "billed",
            "estimated",
            "forecast",
            "summary",
            "detail",
        ),
        "spend passed a budget's warning",
    ),
    EventType(
        "budget.enforce",
        (
            "rule",
            "scope",
            "step",
            "action",
            "about",
            # an approved or timed-out step carries its approval's record too
            "id",
            "state",
            "target",
            "summary",
            "requested_at",
            "expires_at",
            "on_timeout",
            "decision_key",
            "params",
        ),
        "a budget step acted",
    ),
    EventType("budget.approval", ("rule", "id", "summary", "target"), "a step awaits approval"),
    EventType(
        "guard.failed",
        ("summary", "detail", "action", "rule", "provider"),
        "the guard stopped a risky action",
    ),
)


def is_glob(text: str) -> bool:
    """Return whether an `on:` value is a glob rather than one type."""
    return any(char in text for char in "*?[")


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate closest to a misspelt word, if one is close enough."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    return found[0] if found else None


def _known_hint(entries: Iterable[EventType]) -> str:
    return f" (known: {', '.join(entry.name for entry in entries)})"


class EventCatalogue:
    """The event types rules can meet: the providers' sources', Cloudpilot's, the policies'.

    `resolving` lookups (an alert's `resolve.on`) also know the policies' events.
    """

    def __init__(self, sources: Iterable[EventType] = ()) -> None:
        self._sources = (*sources, GAP)
        self._resolving = self._sources + POLICY_EVENTS

    def _entries(self, resolving: bool) -> tuple[EventType, ...]:
        return self._resolving if resolving else self._sources

    def find(self, event_type: str, *, resolving: bool = False) -> EventType | None:
        """Return the catalogue entry of a concrete event type, or None when none emits it."""
        return next((e for e in self._entries(resolving) if e.matches(event_type)), None)

    def unknown_type(self, pattern: str, *, resolving: bool = False) -> str | None:
        """Return why `pattern` (a type or a glob) can never meet an event, or None when it can.

        A glob is fine when it could match a known type or a family's member.
        """
        entries = self._entries(resolving)
        if is_glob(pattern):
            for entry in entries:
                sample = entry.name.replace("*", "x")
                if fnmatch.fnmatchcase(entry.name, pattern) or fnmatch.fnmatchcase(sample, pattern):
                    return None
            return f"no event type matches {pattern!r}{_known_hint(entries)}"
        if self.find(pattern, resolving=resolving) is not None:
            return None
        names = [entry.name for entry in entries]
        guess = suggest(pattern, names)
        hint = f"; did you mean {guess!r}?" if guess else _known_hint(entries)
        return f"no source emits {pattern!r}{hint}"

    def data_fields(self, event_type: str, *, resolving: bool = False) -> frozenset[str] | None:
        """Return the `data` fields events of this type (or glob) may hold; None when unknown.

        For a glob it is every field of every type it matches: a template reads what one of
        them has.
        """
        entries = self._entries(resolving)
        if not is_glob(event_type):
            entry = self.find(event_type, resolving=resolving)
            return frozenset(entry.fields) if entry is not None else None
        matched = [
            entry
            for entry in entries
            if fnmatch.fnmatchcase(entry.name, event_type)
            or fnmatch.fnmatchcase(entry.name.replace("*", "x"), event_type)
        ]
        if not matched:
            return None
        return frozenset(field for entry in matched for field in entry.fields)

    def all_types(self, *, resolving: bool = False) -> list[str]:
        """Return every catalogued type (families as globs), in catalogue order."""
        return [entry.name for entry in self._entries(resolving)]

    def schema(self, *, resolving: bool = False) -> dict[str, object]:
        """Return the JSON Schema of an `on:` value: a type, a family member or a glob."""
        entries = self._entries(resolving)
        exact = [entry.name for entry in entries if not is_glob(entry.name)]
        families = [
            {
                "type": "string",
                "pattern": "^" + re.escape(entry.name.removesuffix("*")) + r"[A-Za-z0-9_.-]+$",
                "description": entry.about,
            }
            for entry in entries
            if is_glob(entry.name)
        ]
        return {
            "description": "An event type, or a glob of them (*, ?, [...]).",
            "anyOf": [
                {"enum": exact},
                *families,
                {"type": "string", "pattern": r"[*?\[]", "description": "A glob of event types."},
            ],
        }


#: The key of the catalogue in a parameter model's validation context (the rule loader's).
EVENTS_CONTEXT = "events"

#: The schema an `on:` value has before the providers' types are filled in (`rule_file_schema`).
EVENT_TYPE_PLACEHOLDER: dict[str, object] = {"type": "string", "description": "An event type."}
