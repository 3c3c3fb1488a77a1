"""DSEE (ACL 2023): sparse plus low-rank fine-tuning updates, then a structured or unstructured pruning step."""
