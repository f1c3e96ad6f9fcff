"""cogkit's HTTP server: Cog's prediction protocol (Cog 0.23.1 / coglet) served by uvicorn.

Modules: ``settings`` (flags and env), ``app`` (ASGI routes), ``service`` (admission,
running predictions, cancel, shutdown), ``prediction`` (one prediction's state and
bodies), ``slots`` (concurrency and the wait queue), ``webhooks``, ``uploads``,
``outputs`` (file outputs to data URLs or uploads), ``sse`` (event streams),
``httpio`` (request/response helpers), ``main`` (process start-up and signals).
"""
