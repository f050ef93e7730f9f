"""Cluster launching: submitit/SLURM glue, torch.distributed environment, local multi-process."""
