"""The replay engine: one pass over a trace, one compiled SLUB model per strategy."""
