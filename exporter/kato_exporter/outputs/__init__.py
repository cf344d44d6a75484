"""Outputs. Each reads the hub's snapshot and never touches a source."""
