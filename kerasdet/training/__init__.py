"""Training recipes and targets."""
