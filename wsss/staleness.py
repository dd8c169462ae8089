"""Whether a finished stage's recorded settings are the current ones: the runner's up-to-date check.

A stage's manifest records the config sections it read (:func:`wsss.config.section_dict`, saved as JSON). Upgrading
wsss adds options; a stage that ran before an option existed is still up to date while the option holds the
behaviour from before (its default, by the rule for adding options, or its :data:`BEHAVIOUR_BEFORE` entry).
"""

from __future__ import annotations

import json
from typing import Any

from wsss.config.tree import Config, section_dict


def _plain(value: Any) -> Any:
    """``value`` as it reads back from a JSON manifest (tuples -> lists, paths -> str)."""
    return json.loads(json.dumps(value, default=str))


def _same_settings(recorded: Any, current: Any, default: Any) -> bool:
    if not (isinstance(recorded, dict) and isinstance(current, dict)):
        return recorded == current
    if set(recorded) - set(current):  # an option that no longer exists: its meaning is gone
        return False
    default = default if isinstance(default, dict) else {}
    for k, v in current.items():
        if k in recorded:
            if not _same_settings(recorded[k], v, default.get(k)):
                return False
        elif k not in default or v != default[k]:  # an option added since, set away from its default
            return False
    return True


# Options added with a default that changes behaviour: what a stage that ran before the option existed did. (The
# rule for adding options is that the default is the behaviour from before; an option whose better default breaks
# that rule records the old behaviour here, so the finished stages it changes become stale on upgrade.)
BEHAVIOUR_BEFORE: dict[str, Any] = {
    "classifier.select": "ap",  # the classifier kept its best validation AP epoch before "loss" became the default
    "segmenter.cls_lse_r": 0.0,  # the image head averaged (GAP) before LSE pooling became the default
}


def _before(sections: tuple[str, ...]) -> dict[str, Any]:
    """The named sections as a stage that ran before each option existed saw them (for options it lacks)."""
    out = _plain(section_dict(Config(), sections))
    for dotted, value in BEHAVIOUR_BEFORE.items():
        for name, data in out.items():
            if dotted.startswith(name + ".") and isinstance(data, dict):
                *path, last = dotted[len(name) + 1 :].split(".")
                for part in path:
                    data = data[part]
                data[last] = value
    return out


def settings_match(recorded: dict[str, Any] | None, cfg: Config, sections: tuple[str, ...]) -> bool:
    """Whether the sections a manifest recorded (``section_dict`` as saved to JSON) are ``cfg``'s.

    Sections the stage no longer reads are left out. Options added to wsss after the manifest was written count as
    unchanged while they hold the behaviour from before they existed: their default, by the rule for adding options,
    or their :data:`BEHAVIOUR_BEFORE` entry. So upgrading wsss does not invalidate finished stages unless a default
    changed what they compute; setting a new option away from that value does.
    """
    if not isinstance(recorded, dict):
        return False
    current = _plain(section_dict(cfg, sections))
    # a section the stage recorded but no longer reads (its value reaches the stage another way now, e.g. with its
    # input's files) cannot make it stale; an option gone from a section it reads still does
    recorded = {k: v for k, v in recorded.items() if k in current}
    return _same_settings(recorded, current, _before(sections))
