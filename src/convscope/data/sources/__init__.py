"""Where examples come from: one module per kind of source (image sets and folders, text tables)."""
