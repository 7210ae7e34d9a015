"""
Workflow files: YAML, validated with the line of every fault.

    description: Summarise the first CSV attachment.
    variables:            # optional defaults, overridden by the request's
      title: Summary
    nodes:
      - id: summarise
        type: python
        script: csv_summary.py   # relative to this file; or `code: |` inline
        timeout: 60              # seconds (default WORKFLOWS_NODE_TIMEOUT)
        network: false           # true: the sandbox lets this node reach the network
      - id: review
        type: human
        prompt: Upload a corrected file if needed.
        timeout: 3600            # seconds to wait (default: no limit)

Nodes run in order. A workflow's name is its file name without `.yaml` / `.yml`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from attachments import paths

from .conf import conf

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SUFFIXES = (".yaml", ".yml")
NODE_TYPES = ("python", "human")
MAX_FILE_BYTES = 1 << 20

_TOP_KEYS = {"name", "description", "variables", "nodes"}
_NODE_KEYS = {
    "python": {"id", "type", "description", "script", "code", "timeout", "network"},
    "human": {"id", "type", "description", "prompt", "timeout"},
}


class WorkflowNotFoundError(LookupError):
    pass


class WorkflowError(ValueError):
    """A malformed workflow file; `line` is 1-based, or None when the fault has no place."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    id: str
    type: str
    line: int
    description: str = ""
    script: str | None = None  # absolute path
    code: str | None = None
    timeout: float | None = None
    prompt: str = ""
    network: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeSpec:
        # Runs recorded before a field existed keep its default.
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def public(self) -> dict[str, Any]:
        """What GET /api/workflows shows of a node."""
        shown: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.description:
            shown["description"] = self.description
        if self.type == "human" and self.prompt:
            shown["prompt"] = self.prompt
        return shown


@dataclasses.dataclass(frozen=True)
class Workflow:
    name: str
    description: str
    nodes: tuple[NodeSpec, ...]
    variables: dict[str, Any]
    path: Path

    def to_spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "variables": self.variables,
            "nodes": [node.to_dict() for node in self.nodes],
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any], path: Path | None = None) -> Workflow:
        return cls(
            name=spec["name"],
            description=spec.get("description", ""),
            nodes=tuple(NodeSpec.from_dict(n) for n in spec["nodes"]),
            variables=dict(spec.get("variables") or {}),
            path=path or Path(),
        )


def workflow_name(requested: str) -> str:
    """The workflow name in a request (`csv_summary` or `csv_summary.yaml`)."""
    for suffix in SUFFIXES:
        if requested.endswith(suffix):
            return requested[: -len(suffix)]
    return requested


def find_workflow(requested: str, directory: Path | None = None) -> Path:
    directory = directory or conf.DIR
    name = workflow_name(requested)
    if not NAME_RE.match(name):
        raise WorkflowNotFoundError(requested)
    for suffix in SUFFIXES:
        try:
            candidate = paths.safe_join(directory, name + suffix)
        except paths.UnsafePath:
            raise WorkflowNotFoundError(requested) from None
        if candidate.is_file():
            return candidate
    raise WorkflowNotFoundError(requested)


def load_workflow(requested: str, directory: Path | None = None) -> Workflow:
    """The named workflow, validated; raises `WorkflowNotFoundError` or `WorkflowError`."""
    return parse_workflow_file(find_workflow(requested, directory))


def list_workflows(directory: Path | None = None) -> list[Workflow | tuple[str, WorkflowError]]:
    """Every workflow file, parsed, in name order; a malformed one comes with its error."""
    directory = directory or conf.DIR
    if not directory.is_dir():
        return []
    found: list[Workflow | tuple[str, WorkflowError]] = []
    names = sorted(
        {p.stem for p in directory.iterdir() if p.suffix in SUFFIXES and NAME_RE.match(p.stem)}
    )
    for name in names:
        try:
            found.append(load_workflow(name, directory))
        except WorkflowError as exc:
            found.append((name, exc))
    return found


def parse_workflow_file(path: Path) -> Workflow:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise WorkflowError(f"The file is larger than {MAX_FILE_BYTES} bytes.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise WorkflowError(f"The file is not UTF-8: {exc.reason}.") from None
    return parse_workflow(text, workflow_name(path.name), path)


def parse_workflow(text: str, name: str, path: Path) -> Workflow:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        raise WorkflowError(f"Invalid YAML: {problem}.", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise WorkflowError(f"Invalid YAML: {exc}.") from None
    if root is None:
        raise WorkflowError("The file is empty; a workflow needs a 'nodes' list.", 1)
    top = _mapping(root, "The workflow")
    _known_keys(top, _TOP_KEYS, "the workflow")
    description = _optional_string(top, "description")
    variables: dict[str, Any] = {}
    if "variables" in top:
        key, value = top["variables"]
        if not isinstance(value, yaml.MappingNode):
            raise WorkflowError("'variables' must be a mapping.", _line(value))
        variables = _python(value)
    if "nodes" not in top:
        raise WorkflowError("A workflow needs a 'nodes' list.", _line(root))
    _key, nodes_node = top["nodes"]
    if not isinstance(nodes_node, yaml.SequenceNode) or not nodes_node.value:
        raise WorkflowError("'nodes' must be a non-empty list.", _line(nodes_node))
    nodes: list[NodeSpec] = []
    seen: set[str] = set()
    for item in nodes_node.value:
        node = _node(item, path.parent)
        if node.id in seen:
            raise WorkflowError(f"Duplicate node id {node.id!r}.", node.line)
        seen.add(node.id)
        nodes.append(node)
    return Workflow(name, description, tuple(nodes), variables, path)


def _node(item: yaml.Node, base: Path) -> NodeSpec:
    fields = _mapping(item, "A node")
    line = _line(item)
    if "id" not in fields:
        raise WorkflowError("A node needs an 'id'.", line)
    node_id = _required_string(fields, "id")
    if not NODE_ID_RE.match(node_id):
        raise WorkflowError(
            f"Node id {node_id!r} must be 1-64 letters, digits, '_', '.' or '-'.",
            _line(fields["id"][1]),
        )
    if "type" not in fields:
        raise WorkflowError(f"Node {node_id!r} needs a 'type' (python or human).", line)
    node_type = _required_string(fields, "type")
    if node_type not in NODE_TYPES:
        raise WorkflowError(
            f"Node {node_id!r} has unknown type {node_type!r} (expected python or human).",
            _line(fields["type"][1]),
        )
    _known_keys(fields, _NODE_KEYS[node_type], f"a {node_type} node")
    timeout = _optional_timeout(fields)
    description = _optional_string(fields, "description")
    if node_type == "human":
        return NodeSpec(
            node_id,
            node_type,
            line,
            description,
            timeout=timeout,
            prompt=_optional_string(fields, "prompt"),
        )
    network = _optional_bool(fields, "network")
    has_script, has_code = "script" in fields, "code" in fields
    if has_script == has_code:
        raise WorkflowError(f"Python node {node_id!r} needs either 'script' or 'code'.", line)
    if has_code:
        code = _required_string(fields, "code")
        try:
            compile(code, f"<{node_id}>", "exec")
        except SyntaxError as exc:
            raise WorkflowError(
                f"Python node {node_id!r}: invalid code: {exc.msg}.",
                _line(fields["code"][1]) + (exc.lineno or 1),
            ) from None
        return NodeSpec(
            node_id, node_type, line, description, code=code, timeout=timeout, network=network
        )
    script = _required_string(fields, "script")
    script_line = _line(fields["script"][1])
    try:
        script_path = paths.resolve_inside(base, paths.safe_join(base, script))
    except paths.UnsafePath:
        raise WorkflowError(
            f"Script {script!r} must be inside the workflows directory.", script_line
        ) from None
    if not script_path.is_file():
        raise WorkflowError(f"Script {script!r} does not exist.", script_line)
    return NodeSpec(
        node_id,
        node_type,
        line,
        description,
        script=str(script_path),
        timeout=timeout,
        network=network,
    )


# Helpers over yaml nodes, which keep their marks (0-based lines).

Fields = dict[str, tuple[yaml.Node, yaml.Node]]


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _mapping(node: yaml.Node, what: str) -> Fields:
    if not isinstance(node, yaml.MappingNode):
        raise WorkflowError(f"{what} must be a mapping.", _line(node))
    fields: Fields = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise WorkflowError("Keys must be plain strings.", _line(key))
        if key.value in fields:
            raise WorkflowError(f"Duplicate key {key.value!r}.", _line(key))
        fields[key.value] = (key, value)
    return fields


def _known_keys(fields: Fields, allowed: set[str], where: str) -> None:
    for name, (key, _value) in fields.items():
        if name not in allowed:
            expected = ", ".join(sorted(allowed))
            raise WorkflowError(
                f"Unknown key {name!r} in {where} (expected {expected}).", _line(key)
            )


def _python(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        raise WorkflowError(f"Invalid value: {exc.problem}.", _line(node)) from None
    finally:
        loader.dispose()


def _required_string(fields: Fields, name: str) -> str:
    _key, node = fields[name]
    value = _python(node)
    if not isinstance(value, str) or not value.strip():
        raise WorkflowError(f"'{name}' must be a non-empty string.", _line(node))
    return value


def _optional_string(fields: Fields, name: str) -> str:
    if name not in fields:
        return ""
    _key, node = fields[name]
    value = _python(node)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WorkflowError(f"'{name}' must be a string.", _line(node))
    return value


def _optional_bool(fields: Fields, name: str) -> bool:
    if name not in fields:
        return False
    _key, node = fields[name]
    value = _python(node)
    if not isinstance(value, bool):
        raise WorkflowError(f"'{name}' must be true or false.", _line(node))
    return value


def _optional_timeout(fields: Fields) -> float | None:
    if "timeout" not in fields:
        return None
    _key, node = fields["timeout"]
    value = _python(node)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise WorkflowError("'timeout' must be a positive number of seconds.", _line(node))
    return float(value)
