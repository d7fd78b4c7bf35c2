"""Use cases: load through the store, call a pure rule, persist the outcome in one write."""
