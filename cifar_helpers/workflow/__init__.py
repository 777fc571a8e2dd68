"""Running a study: opening a stage, executing the notebooks, progress, seed replicates."""
