"""Grad-CAM worker: heatmap, regions of interest and their measured evidence."""
