"""The shop policy the assistant answers from: one snippet per intent, `other` for the rest."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import UserError

POLICIES_FILE = "data/policies.yaml"
FALLBACK_INTENT = "other"


def load(root: Path) -> dict[str, str]:
    """intent -> policy text from `<root>/data/policies.yaml`; a UserError naming the file when bad."""
    path = Path(root) / POLICIES_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: expected a mapping of intent -> policy text")
    for key, value in data.items():
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{path}: {key}: expected non-empty text")
    if FALLBACK_INTENT not in data:
        raise UserError(f"{path}: needs an '{FALLBACK_INTENT}' policy (used for intents without their own)")
    return {str(k): v.strip() for k, v in data.items()}
