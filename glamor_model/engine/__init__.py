"""Training: the run's config, device and distributed set-up, optimizer and schedule,
checkpoints, and the loop."""
