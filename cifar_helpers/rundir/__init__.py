"""The run directory: what a run is and what it writes, checked and written atomically."""
