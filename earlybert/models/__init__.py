"""Model families: adapters, slim modeling, Auto registration, model folders, FLOPs."""
