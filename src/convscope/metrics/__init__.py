"""Evaluation figures beyond what training logs: classification summaries and segmentation metrics."""
