"""Evaluation: figures, confusion matrices and attention maps for every model family, and the
paper's ablation grid."""
