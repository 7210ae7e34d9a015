"""Workflow files: the shipped examples load, and every fault names its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from workflows.conf import EXAMPLES_DIR
from workflows.loader import (
    WorkflowError,
    WorkflowNotFoundError,
    list_workflows,
    load_workflow,
    parse_workflow,
)


def parse(text: str, base: Path | None = None):
    return parse_workflow(textwrap.dedent(text).lstrip(), "w", (base or EXAMPLES_DIR) / "w.yaml")


def test_the_shipped_examples_load():
    summary = load_workflow("csv_summary", EXAMPLES_DIR)
    assert [(n.id, n.type) for n in summary.nodes] == [("summarise", "python")]
    assert Path(summary.nodes[0].script) == EXAMPLES_DIR / "csv_summary.py"
    review = load_workflow("review_csv.yaml", EXAMPLES_DIR)
    assert [(n.id, n.type) for n in review.nodes] == [("ask", "human"), ("summarise", "python")]
    assert all(not isinstance(item, tuple) for item in list_workflows(EXAMPLES_DIR))


def test_spec_round_trips():
    workflow = load_workflow("review_csv", EXAMPLES_DIR)
    from workflows.loader import Workflow

    assert Workflow.from_spec(workflow.to_spec()).nodes == workflow.nodes


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("nodes: [\n", 2, "Invalid YAML"),
        ("description: x\n", 1, "needs a 'nodes' list"),
        ("- a\n- b\n", 1, "must be a mapping"),
        ("nodes: []\n", 1, "non-empty list"),
        ("nodes:\n  - id: a\n    type: pyhton\n    code: x\n", 3, "unknown type 'pyhton'"),
        ("nodes:\n  - type: python\n    code: x\n", 2, "needs an 'id'"),
        ("nodes:\n  - id: a b\n    type: human\n", 2, "Node id 'a b'"),
        (
            "nodes:\n  - id: a\n    type: human\n  - id: a\n    type: human\n",
            4,
            "Duplicate node id",
        ),
        ("nodes:\n  - id: a\n    type: python\n", 2, "either 'script' or 'code'"),
        ("nodes:\n  - id: a\n    type: python\n    script: missing.py\n", 4, "does not exist"),
        (
            "nodes:\n  - id: a\n    type: python\n    script: ../../etc/passwd\n",
            4,
            "inside the workflows",
        ),
        ("nodes:\n  - id: a\n    type: human\n    timeout: -1\n", 4, "'timeout' must be"),
        ("nodes:\n  - id: a\n    type: human\n    scrip: x\n", 4, "Unknown key 'scrip'"),
        ("nodez: []\n", 1, "Unknown key 'nodez'"),
        (
            "nodes:\n  - id: a\n    type: python\n    code: |\n      x = 1\n      def (\n",
            6,
            "invalid code",
        ),
        ("variables: [1]\nnodes:\n  - id: a\n    type: human\n", 1, "'variables' must be"),
    ],
)
def test_faults_name_their_line(text, line, message):
    with pytest.raises(WorkflowError) as caught:
        parse(text)
    assert caught.value.line == line
    assert message in caught.value.message
    assert str(caught.value).startswith(f"line {line}: ")


@pytest.mark.parametrize("name", ["../csv_summary", "nope", "", ".hidden", "a/b"])
def test_unknown_or_unsafe_names_are_not_found(name):
    with pytest.raises(WorkflowNotFoundError):
        load_workflow(name, EXAMPLES_DIR)


def test_malformed_files_are_listed_with_their_fault(tmp_path):
    (tmp_path / "good.yaml").write_text("nodes:\n  - id: a\n    type: human\n")
    (tmp_path / "bad.yml").write_text("nodes:\n  - id: a\n    type: nope\n")
    (tmp_path / "notes.txt").write_text("ignored")
    found = list_workflows(tmp_path)
    assert [getattr(item, "name", None) or item[0] for item in found] == ["bad", "good"]
    name, error = found[0]
    assert error.line == 3
