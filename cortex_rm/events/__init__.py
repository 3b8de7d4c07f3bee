"""Serverless events: registered functions, their routing onto the ring, replicated execution and voting (sans-IO cores)."""
