"""``GET /events`` filters with dockerd's semantics (``daemon/events/filter.go``).

All keys must match (AND). ``type``/``scope`` are exact; ``container``, ``network``, ``volume``,
``daemon`` and the swarm kinds match the actor's ID or ``name`` attribute, exactly or as a
prefix, whatever the event's type (so ``container=x`` hides network events); ``image`` also
matches the image name without its tag; ``label`` is checked against the actor's attributes;
``event`` is exact except for the actions that carry a suffix (``exec_start: sh``).
"""

from __future__ import annotations

from collections.abc import Callable

from api.params import Filters
from engine import errdefs
from engine.events import Event
from engine.images import reference

EVENT_FILTERS = frozenset(
    {
        "config",
        "container",
        "daemon",
        "event",
        "image",
        "label",
        "network",
        "node",
        "plugin",
        "scope",
        "secret",
        "service",
        "type",
        "volume",
    }
)
_NAMED_KINDS = ("daemon", "container", "plugin", "volume", "network", "service", "node", "secret", "config")
_ACTIONS_WITH_SUFFIX = frozenset({"health_status", "exec_create", "exec_start"})


def _strip_tag(image: str) -> str:
    try:
        return reference.parse_normalized_named(image).familiar_name
    except errdefs.EngineError:
        return image


def _match_action(f: Filters, event: Event) -> bool:
    if any(value in _ACTIONS_WITH_SUFFIX for value in f.get("event")):
        return f.fuzzy_match("event", event.action)
    return f.exact_match("event", event.action)


def _match_name(f: Filters, kind: str, event: Event) -> bool:
    return f.fuzzy_match(kind, event.actor_id) or f.fuzzy_match(kind, event.attributes.get("name", ""))


def _match_image(f: Filters, event: Event) -> bool:
    # Container events name their image in "image", image events in "name".
    name = event.attributes.get("name" if event.type == "image" else "image", "")
    return any(
        f.exact_match("image", candidate)
        for candidate in (event.actor_id, name, _strip_tag(event.actor_id), _strip_tag(name))
    )


def event_matcher(f: Filters) -> Callable[[Event], bool]:
    def include(event: Event) -> bool:
        return (
            _match_action(f, event)
            and f.exact_match("type", event.type)
            and f.exact_match("scope", event.scope)
            and all(_match_name(f, kind, event) for kind in _NAMED_KINDS)
            and _match_image(f, event)
            and f.match_labels(event.attributes)
        )

    return include
