"""Training side: synthetic phantoms, dataset layouts, splits, and the paper's training recipe."""
