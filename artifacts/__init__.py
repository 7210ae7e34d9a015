"""Artifact events: the live feed of what changed in a session, its cursors and its broadcasts."""
