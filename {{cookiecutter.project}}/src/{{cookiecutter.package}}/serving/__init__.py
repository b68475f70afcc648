"""The HTTP service, its logs / metrics / traces, canary analysis and the rollout steps."""
