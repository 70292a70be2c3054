"""SPD maths over a loaded decomposition: components, causal importance, losses, training,
analyses."""
