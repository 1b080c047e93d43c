"""Read rule files safely, validate them, and compile them into a RuleSet.

Every problem in every file is collected before anything is reported, and each names the file,
the line and the field: `rules/budget.yaml:14: rules[2].throttle.once_within: not a duration`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from daemon.errors import ConfigError
from daemon.models import Event, Mode
from daemon.rules.action import ActionParams, params_as_data
from daemon.rules.cel import CelCompileError, CelCompiler, CelCondition, CelIssue
from daemon.rules.compiled import (
    DEFAULT_GUARD,
    ActionStep,
    CompiledRule,
    FirstSeen,
    GuardSpec,
    RuleSet,
    RunOptions,
    Throttle,
)
from daemon.rules.events import EVENTS_CONTEXT, EventCatalogue
from daemon.rules.kinds import RuleKind
from daemon.rules.match import MISSING, compile_match, value_getter
from daemon.rules.schema import (
    MAX_WHEN_CHARS,
    GuardModel,
    RuleFileModel,
    RuleModel,
)
from daemon.rules.vocabulary import Vocabulary

MAX_FILE_BYTES: Final = 1024 * 1024
MAX_NESTING: Final = 50
RULE_FILE_SUFFIXES: Final = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a rule file, at a line (when known) and a field."""

    file: str
    line: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.field}: {self.reason}"
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


class RuleError(ConfigError):
    """Rule files are invalid; `problems` lists every problem found, one per line in the text."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def load_rules(paths: Sequence[Path], vocabulary: Vocabulary) -> RuleSet:
    """Return the rules in these files and folders, or raise RuleError listing every problem."""
    rules, problems = _load(paths, vocabulary)
    if problems:
        raise RuleError(problems)
    return rules


def check_rules(paths: Sequence[Path], vocabulary: Vocabulary) -> list[Problem]:
    """Return every problem in these rule files and folders (empty when they are fine)."""
    return _load(paths, vocabulary)[1]


def rule_file_schema(vocabulary: Vocabulary) -> dict[str, Any]:
    """Return the JSON Schema of a rule file, with each action's parameters spelled out."""
    actions = vocabulary.actions
    names = sorted(actions)
    kinds = [kind.model for kind in vocabulary.kinds]
    models: list[type[BaseModel]] = [RuleFileModel, *kinds, *(actions[name] for name in names)]
    refs, top = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/$defs/{model}"
    )
    defs: dict[str, Any] = top.get("$defs", {})
    root_name = refs[(RuleFileModel, "validation")]["$ref"].rsplit("/", 1)[-1]
    rule_name = _named(defs, "Rule")
    steps: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {
                name: {
                    "anyOf": [refs[(actions[name], "validation")], {"type": "null"}],
                    "description": f"Run the {name} action.",
                }
            },
            "required": [name],
            "additionalProperties": False,
        }
        for name in names
    ]
    do = defs[rule_name]["properties"]["do"]
    items: dict[str, Any] = {"oneOf": steps} if steps else {"not": {}}
    do["items"] = items
    schema = dict(defs.pop(root_name))
    schema["$defs"] = defs
    schema["properties"]["rules"]["items"] = _rule_kinds(defs, vocabulary.kinds)
    autoscale = _titled(defs, "Autoscale")["properties"]["provider"]
    autoscale["enum"] = list(vocabulary.autoscalable())
    # The event types are the providers': filled in here, where the vocabulary is known.
    defs[rule_name]["properties"]["on"] = vocabulary.events.schema()
    resolving = vocabulary.events.schema(resolving=True)
    if "alert" in vocabulary.actions:
        resolve = _titled(defs, "Resolve")["properties"]["on"]
        resolve["anyOf"] = [resolving, {"type": "array", "items": resolving}]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


def _named(defs: Mapping[str, Any], title: str) -> str:
    """Return the name of the schema definition with this title."""
    return next(name for name, schema in defs.items() if schema.get("title") == title)


def _titled(defs: dict[str, Any], title: str) -> dict[str, Any]:
    """Return the schema definition with this title."""
    found: dict[str, Any] = defs[_named(defs, title)]
    return found


#: The rule-file schema's identity (a URN: it names the format, it is not fetched).
SCHEMA_ID = "urn:cloudpilot:schema:rule-file:1"


def _rule_kinds(defs: Mapping[str, Any], kinds: Sequence[RuleKind]) -> dict[str, Any]:
    """Return a rule's schema that picks its kind by key, so an editor's error names one kind.

    A rule with a registered kind's key (`autoscale`, `budget`) is a rule of that kind, any
    other an event rule (`on` and `do`); with a plain anyOf, one mistake would list every kind.
    """

    def ref(title: str) -> dict[str, str]:
        return {"$ref": f"#/$defs/{_named(defs, title)}"}

    picked: dict[str, Any] = ref("Rule")
    for kind in reversed(kinds):
        picked = {
            "if": {"type": "object", "required": [kind.key]},
            "then": ref(kind.title),
            "else": picked,
        }
    words = ", ".join(f"{kind.words} ({kind.key})" for kind in kinds)
    return {"description": f"An event rule (on, do), or {words}.", **picked}


# --- reading YAML ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mark:
    """Where a node starts (1-based line, 0-based column) and, for scalars, how it is written."""

    line: int
    column: int
    end_line: int
    style: str | None = None


@dataclass(slots=True)
class _MapPos:
    start: _Mark
    keys: dict[str, tuple[_Mark, _Mark]] = field(default_factory=dict)


@dataclass(slots=True)
class _SeqPos:
    start: _Mark
    items: list[_Mark] = field(default_factory=list)


class _Refusal(Exception):
    """The YAML uses something rule files may not (aliases, tags, duplicate keys)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


_STANDARD_TAGS: Final = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
)


def _mark(node: yaml.Node) -> _Mark:
    style = node.style if isinstance(node, yaml.ScalarNode) else None
    return _Mark(node.start_mark.line + 1, node.start_mark.column, node.end_mark.line + 1, style)


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org") else tag


class _RuleYamlLoader(yaml.SafeLoader):
    """A safe loader that refuses aliases, anchors, odd tags and duplicate keys, and keeps lines.

    Only YAML 1.2's plain scalars are resolved: `on`, `yes` and `no` stay strings, dates stay
    strings, and `010` is the decimal 10 rather than an octal 8.
    """

    yaml_implicit_resolvers: dict[Any, Any] = {}  # PyYAML's per-class registry, kept apart

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.positions: dict[int, _MapPos | _SeqPos] = {}
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """Refuse aliases, anchors, non-standard tags and deep nesting before they are built."""
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refusal(line, "aliases and anchors are not allowed")
        tag = getattr(event, "tag", None)
        if tag is not None and tag != "!" and tag not in _STANDARD_TAGS:
            raise _Refusal(line, f"the tag {_short_tag(tag)} is not allowed")
        if self.depth >= MAX_NESTING:
            # The composer recurses per level: a deep enough file would exhaust the stack.
            raise _Refusal(line, f"nesting deeper than {MAX_NESTING} levels is not allowed")
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        assert node is not None
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Construct a node, turning a bad explicitly tagged value into a clean refusal."""
        try:
            return super().construct_object(node, deep)
        except _Refusal:
            raise
        except (ValueError, KeyError, TypeError, IndexError, yaml.YAMLError):
            raise _Refusal(
                node.start_mark.line + 1,
                f"not a valid {_short_tag(node.tag)} value: {_clip(repr(node.value))}",
            ) from None

    def construct_rule_map(self, node: yaml.MappingNode) -> Iterator[dict[str, Any]]:
        """Build a mapping, refusing duplicate and non-string keys and recording positions."""
        data: dict[str, Any] = {}
        position = _MapPos(_mark(node))
        self.positions[id(data)] = position
        yield data
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=False)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise _Refusal(line, f"keys must be strings, not {_clip(repr(key))}")
            if key in data:
                first = position.keys[key][0].line
                raise _Refusal(line, f"duplicate key {key!r} (first at line {first})")
            data[key] = self.construct_object(value_node, deep=False)
            position.keys[key] = (_mark(key_node), _mark(value_node))

    def construct_rule_seq(self, node: yaml.SequenceNode) -> Iterator[list[Any]]:
        """Build a list, recording the position of each item."""
        data: list[Any] = []
        position = _SeqPos(_mark(node))
        self.positions[id(data)] = position
        yield data
        for item in node.value:
            data.append(self.construct_object(item, deep=False))
            position.items.append(_mark(item))

    def construct_rule_int(self, node: yaml.ScalarNode) -> int:
        """Build an integer the YAML 1.2 way: decimal unless it says 0x or 0o."""
        text = str(self.construct_scalar(node))
        if text.lower().startswith(("0x", "0o")):
            return int(text, 0)
        return int(text, 10)


_RuleYamlLoader.add_constructor("tag:yaml.org,2002:map", _RuleYamlLoader.construct_rule_map)
_RuleYamlLoader.add_constructor("tag:yaml.org,2002:seq", _RuleYamlLoader.construct_rule_seq)
_RuleYamlLoader.add_constructor("tag:yaml.org,2002:int", _RuleYamlLoader.construct_rule_int)
_RuleYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_RuleYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0x[0-9a-fA-F]+|0o[0-7]+)$"),
    list("-+0123456789"),
)
_RuleYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?
            |[-+]?[0-9]+[eE][-+]?[0-9]+
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)
_RuleYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class _Document:
    """One parsed rule file: its data, where each node sits, and its text lines."""

    name: str
    data: Any
    positions: dict[int, _MapPos | _SeqPos]
    lines: list[str]

    def line_of(self, loc: Sequence[str | int]) -> int:
        """Return the line of the node at `loc`, or of its nearest ancestor that exists."""
        return self.mark_of(loc)[0]

    def mark_of(self, loc: Sequence[str | int]) -> tuple[int, _Mark | None]:
        """Return the line at `loc` and the value's mark if the whole path exists."""
        node = self.data
        position = self.positions.get(id(node))
        line = position.start.line if position is not None else 1
        value_mark: _Mark | None = position.start if position is not None else None
        for part in loc:
            position = self.positions.get(id(node))
            if isinstance(node, dict) and isinstance(position, _MapPos) and part in node:
                key_mark, value_mark = position.keys[str(part)]
                line = key_mark.line
                node = node[part]
            elif (
                isinstance(node, list)
                and isinstance(position, _SeqPos)
                and isinstance(part, int)
                and 0 <= part < len(node)
            ):
                value_mark = position.items[part]
                line = value_mark.line
                node = node[part]
            else:
                return line, None
        return line, value_mark


def parse_yaml(text: str) -> Any:
    """Return the data of rule-file text as the loader reads it: YAML 1.2 scalars, no tags.

    Raise yaml.YAMLError when it is not YAML the loader accepts.
    """
    loader = _RuleYamlLoader(text)
    try:
        return loader.get_single_data()
    except _Refusal as refusal:
        raise yaml.YAMLError(refusal.reason) from None
    finally:
        loader.dispose()


def _read(path: Path, name: str) -> _Document | Problem:
    """Return the parsed file, or the one problem that stops it from being read."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return Problem(name, None, "file", f"file is larger than 1 MiB ({size} bytes)")
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return Problem(name, None, "file", f"cannot read the file: {exc.strerror or exc}")
    if len(raw) > MAX_FILE_BYTES:
        return Problem(name, None, "file", f"file is larger than 1 MiB ({len(raw)}+ bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return Problem(
            name, line, "file", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column})"
        )
    text = text.removeprefix("\ufeff")
    loader = _RuleYamlLoader(text)
    try:
        data = loader.get_single_data()
    except _Refusal as refusal:
        return Problem(name, refusal.line, "yaml", refusal.reason)
    except yaml.MarkedYAMLError as exc:
        return _yaml_problem(name, exc)
    except yaml.YAMLError as exc:
        return Problem(name, None, "yaml", f"invalid YAML: {_clip(str(exc), 200)}")
    finally:
        loader.dispose()
    if data is None:
        return Problem(
            name, 1, "file", "the file is empty (a rule file has a top-level `rules:` list)"
        )
    if not isinstance(data, dict):
        return Problem(
            name,
            1,
            "file",
            f"the top level must be a mapping with a `rules:` list, not {_kind(data)}",
        )
    return _Document(name, data, loader.positions, text.splitlines())


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _yaml_problem(name: str, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    parts = [part for part in (exc.context, exc.problem) if part]
    reason = "invalid YAML: " + (", ".join(parts) or "cannot parse")
    if mark is None:
        return Problem(name, None, "yaml", reason)
    return Problem(name, mark.line + 1, "yaml", f"{reason} (column {mark.column + 1})")


# --- validating ------------------------------------------------------------------------------


def _field_path(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part != "[key]":
            text += f".{part}" if text else part
    return text


_MUST: Final = {
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return _clip(repr(value))


def _reason(error: Mapping[str, Any]) -> str:
    """Return a pydantic error as a plain reason a person can act on."""
    kind = error["type"]
    message = str(error["msg"])
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required"
    if kind in _MUST:
        return f"{_MUST[kind]}, got {_show(error.get('input'))}"
    if kind == "literal_error":
        return f"must be {error['ctx']['expected']}, got {_show(error.get('input'))}"
    if kind == "too_short" and error.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return (
            f"{_show(error.get('input'))} must start with a letter or digit and hold only"
            " letters, digits, '_', '.' and '-'"
        )
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    for prefix in ("Input should ", "String should ", "List should ", "Value should "):
        if message.startswith(prefix):
            return "must " + message.removeprefix(prefix)
    return message


def _errors(
    doc: _Document, exc: ValidationError, prefix: tuple[str | int, ...]
) -> Iterator[Problem]:
    for error in exc.errors(include_url=False):
        loc = prefix + tuple(error["loc"])
        yield Problem(doc.name, doc.line_of(loc), _field_path(loc), _reason(error))


@dataclass(slots=True)
class _Loading:
    """What loading all files gathers: rules, the guard, and where each name was first seen."""

    vocabulary: Vocabulary
    cel: CelCompiler = field(default_factory=CelCompiler)
    rules: list[CompiledRule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    guard: GuardSpec | None = None
    guard_at: str = ""
    files: list[str] = field(default_factory=list)
    kinds: dict[str, list[Any]] = field(default_factory=dict)
    # Risky actions on providers without snapshots, checked once the guard is known.
    unsnapshotted: list[_Unsnapshotted] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Unsnapshotted:
    """An action on a provider without snapshots that did not say `snapshot: none`."""

    file: str
    line: int
    field: str
    action: str
    provider: str


def _load(paths: Sequence[Path], vocabulary: Vocabulary) -> tuple[RuleSet, list[Problem]]:
    state = _Loading(vocabulary)
    for path, name in _rule_files(paths, state.problems):
        read = _read(path, name)
        state.files.append(name)
        if isinstance(read, Problem):
            state.problems.append(read)
            continue
        found: list[Problem] = []
        _load_document(read, state, found)
        found.sort(key=lambda problem: problem.line or 0)
        state.problems.extend(found)
    guard = state.guard or DEFAULT_GUARD
    for unsafe in state.unsnapshotted:
        if unsafe.action in guard.risky:
            state.problems.append(
                Problem(
                    unsafe.file,
                    unsafe.line,
                    unsafe.field,
                    f"required for {unsafe.action} on {unsafe.provider}: the guard lists "
                    f"{unsafe.action} as risky and {unsafe.provider} takes no snapshots; write "
                    "`snapshot: none` to act without one",
                )
            )
    rules = RuleSet(
        tuple(state.rules),
        state.guard,
        tuple(state.files),
        {kind.key: tuple(state.kinds.get(kind.key, ())) for kind in vocabulary.kinds},
    )
    return rules, state.problems


def _rule_files(paths: Sequence[Path], problems: list[Problem]) -> Iterator[tuple[Path, str]]:
    """Yield each rule file once, folders expanded to their *.yaml and *.yml files, sorted."""
    seen: set[Path] = set()
    for given in paths:
        if given.is_dir():
            try:
                children = sorted(
                    child
                    for child in given.iterdir()
                    if child.suffix in RULE_FILE_SUFFIXES
                    and not child.name.startswith(".")
                    and child.is_file()
                )
            except OSError as exc:
                reason = f"cannot read the folder: {exc.strerror or exc}"
                problems.append(Problem(str(given), None, "file", reason))
                continue
        elif given.exists():
            children = [given]
        else:
            problems.append(Problem(str(given), None, "file", "no such file or folder"))
            continue
        for child in children:
            resolved = child.resolve()
            if resolved not in seen:
                seen.add(resolved)
                yield child, str(child)


def _load_document(doc: _Document, state: _Loading, found: list[Problem]) -> None:
    data: dict[str, Any] = doc.data
    for key in data:
        if key not in ("rules", "guard"):
            found.append(
                Problem(doc.name, doc.line_of((key,)), key, "unknown field (expected rules, guard)")
            )
    if "guard" in data:
        _load_guard(doc, state, found)
    if "rules" not in data:
        found.append(Problem(doc.name, 1, "rules", "required (a list of rules, may be empty)"))
        return
    rules = data["rules"]
    if not isinstance(rules, list):
        found.append(
            Problem(
                doc.name, doc.line_of(("rules",)), "rules", f"must be a list, got {_show(rules)}"
            )
        )
        return
    for index, raw in enumerate(rules):
        kinds = state.vocabulary.kinds
        kind = next((k for k in kinds if isinstance(raw, dict) and k.key in raw), None)
        if kind is not None:
            assert isinstance(raw, dict)
            compiled = _load_kind(kind, doc, index, raw, state, found)
            if compiled is not None:
                state.kinds.setdefault(kind.key, []).append(compiled)
            continue
        rule = _load_rule(doc, index, raw, state, found)
        if rule is not None:
            state.rules.append(rule)


def _load_guard(doc: _Document, state: _Loading, found: list[Problem]) -> None:
    line = doc.line_of(("guard",))
    where = f"{doc.name}:{line}"
    if state.guard_at:
        found.append(
            Problem(
                doc.name,
                line,
                "guard",
                f"only one guard section is allowed; the first is at {state.guard_at}",
            )
        )
        return
    state.guard_at = where
    try:
        guard = GuardModel.model_validate(doc.data["guard"])
    except ValidationError as exc:
        found.extend(_errors(doc, exc, ("guard",)))
        return
    state.guard = GuardSpec(
        risky=tuple(guard.risky),
        snapshot_first=guard.snapshot_first,
        snapshot_timeout_s=guard.snapshot_timeout,
        keep_snapshots=guard.keep_snapshots,
        file=doc.name,
        verify_timeout_s=guard.verify_timeout,
        rollback_on_failure=guard.rollback_on_failure,
        to=tuple(guard.to),
    )


def _check_name(
    doc: _Document,
    at: tuple[str | int, ...],
    raw: dict[str, Any],
    state: _Loading,
    found: list[Problem],
) -> None:
    name = raw.get("name")
    if isinstance(name, str):
        where = f"{doc.name}:{doc.line_of((*at, 'name'))}"
        first = state.names.setdefault(name, where)
        if first != where:
            found.append(
                Problem(
                    doc.name,
                    doc.line_of((*at, "name")),
                    _field_path((*at, "name")),
                    f"duplicate rule name {name!r} (first at {first})",
                )
            )


def _load_kind(
    kind: RuleKind,
    doc: _Document,
    index: int,
    raw: dict[str, Any],
    state: _Loading,
    found: list[Problem],
) -> object | None:
    """Validate a rule of a registered kind and compile it; None after adding problems."""
    at: tuple[str | int, ...] = ("rules", index)
    _check_name(doc, at, raw, state, found)
    try:
        model = kind.model.model_validate(raw)
    except ValidationError as exc:
        found.extend(_errors(doc, exc, at))
        return None
    compiled: object | None = kind.compile(model, _Compiling(doc, at, state, found))
    return compiled


@dataclass(slots=True)
class _Compiling:
    """What a rule kind's compiler may use: where the rule is, the vocabulary, the problems."""

    doc: _Document
    at: tuple[str | int, ...]
    state: _Loading
    found: list[Problem]

    @property
    def vocabulary(self) -> Vocabulary:
        """Return what rule files may name."""
        return self.state.vocabulary

    @property
    def file(self) -> str:
        """Return the rule file's name."""
        return self.doc.name

    def line(self, *path: str | int) -> int:
        """Return the line of a path inside the rule (the rule's own line for none)."""
        return self.doc.line_of((*self.at, *path))

    def problem(self, path: tuple[str | int, ...], reason: str) -> None:
        """Report a problem at a path inside the rule."""
        where = (*self.at, *path)
        self.found.append(
            Problem(self.doc.name, self.doc.line_of(where), _field_path(where), reason)
        )

    def needs_snapshot_none(self, path: tuple[str | int, ...], action: str, provider: str) -> None:
        """Report, once the guard is known, a risky action on a provider without snapshots."""
        where = (*self.at, *path)
        self.state.unsnapshotted.append(
            _Unsnapshotted(
                self.doc.name,
                self.doc.line_of(where),
                _field_path((*where, "snapshot")),
                action,
                provider,
            )
        )


def _load_rule(
    doc: _Document, index: int, raw: Any, state: _Loading, found: list[Problem]
) -> CompiledRule | None:
    at: tuple[str | int, ...] = ("rules", index)
    before = len(found)
    model: RuleModel | None = None
    try:
        model = RuleModel.model_validate(raw)
    except ValidationError as exc:
        found.extend(_errors(doc, exc, at))
    if not isinstance(raw, dict):
        return None
    _check_name(doc, at, raw, state, found)
    on = raw.get("on") if isinstance(raw.get("on"), str) and raw.get("on") else None
    if on is not None and (reason := state.vocabulary.events.unknown_type(on)) is not None:
        found.append(Problem(doc.name, doc.line_of((*at, "on")), _field_path((*at, "on")), reason))
    steps = _load_steps(
        doc,
        at,
        raw.get("do"),
        state.vocabulary.actions,
        found,
        on=on,
        events=state.vocabulary.events,
    )
    for number, step in enumerate(steps or ()):
        # Unset fields are not stored: the default is the action's first provider.
        provider = step.params.get("provider", _default_provider(state.vocabulary, step.action))
        if (
            isinstance(provider, str)
            and not state.vocabulary.takes_snapshots(provider)
            and step.params.get("snapshot") != "none"
        ):
            loc = (*at, "do", number, step.action)
            state.unsnapshotted.append(
                _Unsnapshotted(
                    doc.name,
                    doc.line_of(loc),
                    _field_path((*loc, "snapshot")),
                    step.action,
                    str(provider),
                )
            )
    when = raw.get("when")
    condition = None
    if isinstance(when, str) and 0 < len(when) <= MAX_WHEN_CHARS:
        try:
            condition = state.cel.compile(when)
        except CelCompileError as exc:
            found.extend(_cel_problems(doc, (*at, "when"), when, exc.issues))
    if len(found) > before or model is None or steps is None:
        return None
    return _compile(doc, model, index, steps, condition)


def _load_steps(
    doc: _Document,
    at: tuple[str | int, ...],
    raw: Any,
    actions: Mapping[str, type[ActionParams]],
    found: list[Problem],
    *,
    on: str | None = None,
    events: EventCatalogue | None = None,
) -> tuple[ActionStep, ...] | None:
    """Return the `do` steps with validated parameters, or None after adding problems.

    With `on`, the rule's event type, parameters that read the event are checked against it
    and the `events` catalogue.
    """
    events = events or EventCatalogue()
    if not isinstance(raw, list):
        return None  # the model has said why
    steps: list[ActionStep] = []
    ok = True
    for number, step in enumerate(raw):
        loc = (*at, "do", number)
        if not isinstance(step, dict):
            ok = False
            continue
        if len(step) != 1:
            keys = ", ".join(step) or "none"
            found.append(
                Problem(
                    doc.name,
                    doc.line_of(loc),
                    _field_path(loc),
                    f"must have exactly one key, the action's name (got {keys})",
                )
            )
            ok = False
            continue
        ((action, params),) = step.items()
        loc = (*loc, action)
        model = actions.get(action)
        if model is None:
            known = ", ".join(sorted(actions)) or "none"
            found.append(
                Problem(
                    doc.name,
                    doc.line_of(loc),
                    _field_path(loc),
                    f"unknown action {action!r} (known: {known})",
                )
            )
            ok = False
            continue
        if params is None:
            params = {}
        if not isinstance(params, dict):
            found.append(
                Problem(
                    doc.name,
                    doc.line_of(loc),
                    _field_path(loc),
                    f"must be a mapping of the action's parameters, got {_show(params)}",
                )
            )
            ok = False
            continue
        try:
            validated = model.model_validate(params, context={EVENTS_CONTEXT: events})
        except ValidationError as exc:
            found.extend(_errors(doc, exc, loc))
            ok = False
            continue
        except Exception as exc:  # a validator that raised the wrong kind of error
            found.append(
                Problem(
                    doc.name,
                    doc.line_of(loc),
                    _field_path(loc),
                    f"invalid parameters ({type(exc).__name__}: {_clip(str(exc), 200)})",
                )
            )
            ok = False
            continue
        if on is not None:
            fields = events.data_fields(on)
            for path, reason in validated.event_problems(on, fields):
                where = (*loc, *path)
                found.append(Problem(doc.name, doc.line_of(where), _field_path(where), reason))
                ok = False
        steps.append(ActionStep(action, params_as_data(validated)))
    return tuple(steps) if ok else None


def _cel_problems(
    doc: _Document, loc: tuple[str | int, ...], text: str, issues: list[CelIssue]
) -> Iterator[Problem]:
    line, mark = doc.mark_of(loc)
    for issue in issues:
        where, column = line, None
        if mark is not None:
            where, column = _cel_position(doc, mark, text, issue)
        reason = issue.message if column is None else f"{issue.message} (column {column})"
        yield Problem(doc.name, where, _field_path(loc), reason)


def _cel_position(doc: _Document, mark: _Mark, text: str, issue: CelIssue) -> tuple[int, int]:
    """Return the file line and 1-based column of a position in a CEL expression."""
    if mark.style == "|":
        content = doc.lines[mark.line : mark.end_line]
        indent = next((len(line) - len(line.lstrip(" ")) for line in content if line.strip()), 0)
        return mark.line + issue.line, indent + issue.column
    expression_lines = text.split("\n")
    offset = sum(len(line) + 1 for line in expression_lines[: issue.line - 1])
    offset += issue.column - 1
    quoted = 1 if mark.style in ("'", '"') else 0
    if mark.style == ">":
        first_line, first_column = mark.line + 1, None
    else:
        first_line, first_column = mark.line, mark.column + quoted
    # Walk the written lines: a folded or multi-line scalar joins them with one character each.
    position = 0
    for number in range(first_line, max(first_line, mark.end_line) + 1):
        if number > len(doc.lines):
            break
        written = doc.lines[number - 1]
        if number == first_line and first_column is not None:
            start = first_column
        else:
            start = len(written) - len(written.lstrip(" \t"))
        length = len(written) - start
        if offset <= position + length:
            return number, start + (offset - position) + 1
        position += length + 1
    return mark.line, mark.column + quoted + issue.column


# --- compiling -------------------------------------------------------------------------------


def _compile(
    doc: _Document,
    model: RuleModel,
    index: int,
    steps: tuple[ActionStep, ...],
    condition: CelCondition | None,
) -> CompiledRule:
    group_by = tuple(model.throttle.group_by) if model.throttle is not None else ("resource",)
    first_seen = None
    if model.first_seen is not None:
        by = tuple(model.first_seen.by)
        first_seen = FirstSeen(model.first_seen.within, by, _group(by))
    return CompiledRule(
        name=model.name,
        file=doc.name,
        line=doc.line_of(("rules", index)),
        on=model.on,
        steps=steps,
        mode=Mode(model.mode),
        enabled=model.enabled,
        description=model.description or "",
        match=compile_match(model.match) if model.match else None,
        when=condition,
        for_s=model.for_,
        throttle=(
            Throttle(model.throttle.once_within, group_by) if model.throttle is not None else None
        ),
        first_seen=first_seen,
        group=_group(group_by),
        run=RunOptions(model.concurrency, model.max_running, model.timeout),
    )


def _group(paths: tuple[str, ...]) -> Callable[[Event], str]:
    """Return a function giving an event's group: the values at `paths` joined with `|`."""
    parts = [_group_part(path) for path in paths]
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        return lambda event: f"{first(event)}|{second(event)}"
    return lambda event: "|".join([part(event) for part in parts])


def _group_part(path: str) -> Callable[[Event], str]:
    """Return a function giving the text of one group value ("" when missing or null)."""
    if path in ("type", "key", "resource"):
        return attrgetter(path)
    get = value_getter(path)

    def part(event: Event) -> str:
        value = get(event)
        if value.__class__ is str:
            return value
        return "" if value is MISSING or value is None else str(value)

    return part


def _default_provider(vocabulary: Vocabulary, action: str) -> object:
    """Return the provider an action's step acts on when it names none (None: not a server's)."""
    model = vocabulary.actions.get(action)
    found = model.model_fields.get("provider") if model is not None else None
    return found.default if found is not None else None
