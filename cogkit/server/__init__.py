"""cogkit's HTTP server: Cog's prediction protocol (Cog 0.23.1 / coglet), a drop-in for a
Cog image's server.

Modules: ``main`` (process start-up and signals), ``settings`` (flags and env), ``http``
(the HTTP/1.1 layer on httptools), ``app`` (the routes), ``service`` (admission, running
predictions on the worker, cancel, shutdown), ``prediction`` (one prediction's state and
bodies), ``slots`` (concurrency and the wait queue), ``webhooks``, ``uploads``, ``outputs``
(file outputs to data URLs or uploads), ``sse`` (event streams), ``httpio`` (JSON bodies and
coglet's error texts), ``jsonio`` (the JSON codec).
"""
