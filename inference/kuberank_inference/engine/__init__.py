"""Dynamic batching: admission, planning, token budgets. Knows neither HTTP nor torch."""
