"""The pages of the WEAT Lens app (routed by app.py) and their shared helpers."""
