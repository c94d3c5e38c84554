"""Webhooks as OpenAI sends them: events (`events`), Standard Webhooks signatures (`signing`) and
the address rules of a delivery target (`targets`).

The endpoints live in the `webhook_endpoints` table (the API's /v1/webhook_endpoints), the
deliveries and their attempts in `webhook_deliveries` / `webhook_attempts`; the worker's delivery
loop (openft.jobs.webhook_delivery) sends them. This package knows the tables and HTTP as a
client; it knows nothing about jobs' internals, the API routes or the worker.
"""
