"""The `kubetune` command: run a FineTuneJob locally, the quickstart, the dev cluster, CRDs."""
