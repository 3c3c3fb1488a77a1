"""The method, with no DeepSpeed: coefficients, masks, tickets, the early-bird detector, shrinking."""
