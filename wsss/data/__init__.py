"""Datasets: adapters that find images and labels, the index file, splits and synthetic data."""
