"""Procedural design images and what they show: the demo model's training data (scenes.py) and
the scorer that checks generated images against it (scorer.py). Pillow and numpy only."""
