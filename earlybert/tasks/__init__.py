"""Downstream tasks: GLUE and custom classification, SQuAD, metrics, evaluation."""
