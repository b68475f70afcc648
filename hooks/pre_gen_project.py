"""Reject answers that would bake a broken project: one line naming the field, exit 1.

The rules live in cookiecutter.json (`_rules`), which the template's tests read too. Choice options
need no rule here: cookiecutter itself refuses a value outside their list.
"""

from __future__ import annotations

import json
import keyword
import re
import sys

ANSWERS = json.loads(r"""{{ cookiecutter | jsonify }}""")
RULES = ANSWERS["_rules"]


def problems(answers: dict, rules: dict) -> list[str]:
    """Every reason the answers cannot be baked, each naming its field."""
    found = []
    for field in ("project", "package"):
        value = answers[field]
        if not re.match(rules[field]["pattern"], value) or (field == "package" and keyword.iskeyword(value)):
            found.append(f"{field}: {value!r} {rules[field]['message']}")
    for rule in rules["unsupported"]:
        if all(answers[k] == v for k, v in rule["when"].items()):
            found.append(f"{rule['field']}: {rule['message']}")
    return found


if __name__ == "__main__":
    errors = problems(ANSWERS, RULES)
    if errors:
        # One line: the first problem is the root one (a bad project name also makes the derived
        # package name bad).
        print(f"cookiecutter-llmops: {errors[0]}", file=sys.stderr)
        sys.exit(1)
