"""Analysis on the host: survival models, fleet comparison, cost, reports and the optimiser."""
