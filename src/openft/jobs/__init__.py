"""Fine-tuning jobs: validation, the queue (atomic claim, heartbeat, lease expiry), the worker
and the runner that drives the trainer in a child process.

Knows the database tables and the trainer's interface (openft.train); knows nothing about HTTP.
"""
