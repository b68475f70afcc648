"""Production back to the golden set: capture records (records.py), the service's capture sink
(capture.py), drift detection (drift/) and harvesting candidates for review (harvest.py)."""
