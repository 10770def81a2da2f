"""The report: a model first (model.py), rendered second (render.py)."""
