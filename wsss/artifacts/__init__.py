"""The data products that cross stages, each with the code that writes and reads it: the score table
(:mod:`wsss.artifacts.scores`)."""
