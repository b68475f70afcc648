"""The LLM judge: rubric verdicts (rubric.py), agreement with people (kappa.py), calibration."""
