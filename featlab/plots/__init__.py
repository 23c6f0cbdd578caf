"""Figures researchers look at: low-shot curves, ROC curves, confusion matrices, neighbour
galleries and t-SNE panels. matplotlib (Agg backend), written as PNG or SVG.

Each ``plot_*`` function takes results or arrays, returns the ``matplotlib.figure.Figure`` and
writes it when given ``out``; nothing here reads a store on its own.
"""
