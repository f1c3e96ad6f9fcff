"""Container images from cog.yaml: ``cogkit build``, ``cogkit push``, ``--image`` runs.

- :mod:`.pipeline` — the build end to end (config -> staged context -> builder)
- :mod:`.dockerfile` — the Dockerfile text; :mod:`.cuda` — the GPU base image choice
- :mod:`.requirements` — pip requirements; :mod:`.wheel` — the cogkit wheel for the image
- :mod:`.context` — files, ``.dockerignore`` (:mod:`.dockerignore`), weights, staging
- :mod:`.engines` — finding docker/podman/buildah/skopeo; :mod:`.builders` — running a build
- :mod:`.push` — pushing; :mod:`.runner` — running an image (``run_image``, ``serve_image``)
- :mod:`.manifests` — Kubernetes manifests for an image (``cogkit export kserve|k8s``)

Nothing here imports torch or the user's code (the schema is computed in a subprocess).
"""
