"""The kubetune operator: reconciles FineTuneJobs (and ContinuousPretrains) into batch/v1 Jobs.

Run it with `python -m kubetune_operator` (KUBECONFIG or in-cluster credentials); see main.py.
"""
