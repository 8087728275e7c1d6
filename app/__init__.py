"""Mneme's front ends: the CLI now; the Qt desktop app, tray and recall overlay next."""
