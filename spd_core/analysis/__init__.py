"""Analyses over a loaded decomposition: CI, attributions, influence, circuits, interventions,
editing."""
