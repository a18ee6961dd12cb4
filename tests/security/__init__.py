"""Hostile cases, one file per class of attack (docs/security.md)."""
