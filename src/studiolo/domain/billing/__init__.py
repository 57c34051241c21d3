"""Billing: plans, quotas, the credit ledger and Stripe payments (issue 15, docs/billing.md)."""
