"""DVC stage entry points. Each module: a pure function plus a thin `main` taking dvc.yaml's paths."""
