"""OpenAPI postprocessing for the workflow endpoints (drf-spectacular)."""

from __future__ import annotations

from typing import Any


def one_of_workflow_or_alias(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: `yaml_file` is an alias of `workflow`; one is required."""
    component = result.get("components", {}).get("schemas", {}).get("ExecuteRequest")
    if component is not None:
        component["anyOf"] = [{"required": ["workflow"]}, {"required": ["yaml_file"]}]
    return result
