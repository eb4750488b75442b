"""Sweeps: several searches from one sweep file, run at once on one Ray cluster, sharing baselines.

`spec.py` (pure: the sweep file -> named search configs, baseline keys), `folder.py` (the sweep
folder's paths and sweep.json), `launch.py` (create, run and resume a sweep), `status.py`,
`report.py` (one comparison report across the sweep's searches).
"""
