"""The MLflow registry: app versions pinned to their commit, the pyfunc model, promote / rollback."""
