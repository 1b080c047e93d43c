"""Alert templates: what renders, what the sandbox refuses, and the bounds on work and memory."""

from __future__ import annotations

import re

import pytest

from daemon.notify.templates import MAX_VALUE, AlertTemplate

EVENT = {"event": {"type": "seeweb.action.failed", "resource": "ec1", "data": {"type": "reboot"}}}

# Each would take minutes or gigabytes if computed; each is refused when the rule loads.
BOMBS = {
    "power": ("{{ 9**99999999 }}", "an integer of more than 4,096 bits"),
    "repeat": ("{{ ('x' * 300000000)|length }}", "a value of 300,000,000 characters"),
    "list-repeat": ("{{ [1] * 1000000000 }}", "a value of 1,000,000,000"),
    "center": ("{{ 'x'|center(300000000) }}", "center() with an argument over 65,536"),
    "ljust": ("{{ 'x'.ljust(300000000) }}", "ljust() with an argument over 65,536"),
    "printf": ("{{ '%0999999999d' % 1 }}", "a % format width of 999,999,999"),
    "format-filter": ("{{ '%999999999s'|format(1) }}", "a % format width of 999,999,999"),
    "str-format": ("{{ '{:>999999999}'.format(1) }}", "a format width in '>999999999'"),
    "batch": ("{{ range(3)|batch(1000000000, 'x')|list }}", "batch() with an argument over"),
    "replace": (
        "{{ 'aaaaaaaaaa'" + "|replace('a', 'aaaaaaaaaa')" * 6 + " }}",
        "a value of 110,000 characters",
    ),
    "loops": (
        "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
        "more than 10,000 loop iterations",
    ),
    "doubling": (
        "{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ f('x', 40) }}",
        "a value of 131,072 characters",
    ),
    "join": ("{{ ', '.join(['x' * 60000] * 100) }}", "a value of 120,206 characters"),
    "many-values": (
        "{{ range(1000)|map('center', 60000)|join }}",
        "more than 1,048,576 characters made in one rendering",
    ),
}


@pytest.mark.parametrize("name", BOMBS)
def test_a_template_bomb_is_refused_when_the_rule_loads(name: str) -> None:
    source, reason = BOMBS[name]
    with pytest.raises(ValueError, match="cannot be rendered safely") as refused:
        AlertTemplate(source)
    assert reason in str(refused.value)


def test_a_bomb_behind_event_data_is_stopped_when_it_renders() -> None:
    # It loads (with no event the branch is not taken), and stops at its bound when it is.
    template = AlertTemplate(
        "ok{% if event.data.type %}{{ event.data.type * 999999999 }}{% endif %}"
    )
    text, error = template.render(EVENT, 100)
    assert text == "ok"
    assert error == "TemplateLimit: a value of 5,999,999,994 characters or items (at most 65,536)"


def test_a_long_event_value_is_cut_but_not_refused() -> None:
    template = AlertTemplate("{{ event.data.type * 10 }} on {{ event.resource }}")
    text, error = template.render({"event": {"resource": "ec1", "data": {"type": "x" * 6000}}}, 50)
    assert error is None
    assert text == "x" * 49 + "…"


def test_ordinary_templates_render_as_jinja_does() -> None:
    source = (
        "{{ [1, 2]|join(', ') }} {{ range(3)|map('string')|join(',') }} {{ 'a' ~ 'b' ~ 1 }}"
        " {{ 3 * 4 }} {{ 'ab' * 3 }} {{ '%05d' % 3 }} {{ '{:>4}'.format('x') }}"
        " {% for i in range(3) %}{{ loop.index }}/{{ loop.length }}{% endfor %}"
        " {{ event.data.type|upper }} {{ event.data.missing.deeper }}|"
    )
    text, error = AlertTemplate(source).render(EVENT, 500)
    assert error is None
    assert text == "1, 2 0,1,2 ab1 12 ababab 00003    x 1/32/33/3 REBOOT |"


def test_values_up_to_the_bound_render() -> None:
    text, error = AlertTemplate(f"{{{{ ('x' * {MAX_VALUE})|length }}}}").render({}, 100)
    assert (text, error) == (str(MAX_VALUE), None)


def test_the_sandbox_refuses_internals_and_changing_data() -> None:
    template = AlertTemplate("{{ event.__class__.__mro__ }}{{ event.data.update({'a': 1}) }}")
    text, error = template.render(EVENT, 500)
    assert text == ""
    assert error is not None and error.startswith("SecurityError: ")


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ event.data.type ", "not a valid template (template line 1): unexpected end"),
        ("{{ " + "(" * 1500 + "1" + ")" * 1500 + " }}", "not a valid template: nested too deeply"),
    ],
    ids=["unclosed", "nested"],
)
def test_malformed_templates_are_refused_with_a_reason(source: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        AlertTemplate(source)
