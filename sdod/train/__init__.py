"""Training: the loop, stopping, optimiser and schedule, metric log lines, the job runner."""
