"""Toy targets and the demo language model, with the data they are trained and decomposed on."""
