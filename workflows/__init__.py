"""Workflow runs: YAML workflows whose nodes run in a session's workspace, producing artifacts."""
