"""The evaluation harness: golden set -> runner (model calls, cache, repeats) -> scorers -> metrics."""
