"""Model commands: convert-weights, model-info."""

COMMANDS: list = []
