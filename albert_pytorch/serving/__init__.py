"""Serving a trained model over HTTP with dynamic batching, in the protocols TEI's and Triton's clients speak:
`engine` (backends, tokenization, the batcher), `app` (the routes, limits and metrics), `page` (`GET /`),
`server` (uvicorn, or Ray Serve replicas)."""
