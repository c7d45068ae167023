"""Datasets: synthetic renders, image folders, RecordIO, generated images + controls, verification ``.bin`` sets.

Each is built with ``_target_`` from ``conf/data/*.yaml`` and reads nothing before ``setup()``.
"""
