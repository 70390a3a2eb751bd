"""Segmentation from classifiers: class maps and attention, mask rules, threshold and CRF search, the files of
``convscope segment``."""
