"""xypipe."""
