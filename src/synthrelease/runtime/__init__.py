"""Runtime services shared by every layer: atomic file-system writes, seeding, progress."""
